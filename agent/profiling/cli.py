"""`ctxscope agent profile MODEL`: operator shares from device time, with roofline, per context length.

Prints a share table (percent of device time, with milliseconds) and records a run like `agent run`
(`engine/recorder.py`): run start with the manifest, one result per length, run end; written as JSON
lines (`--out`) or streamed to the collector (`--broker` / `--config`).
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

import click

from ctxscope.agent.cliopts import progress_option, record_options, torch_device_option
from ctxscope.agent.engine.limits import MAX_CONTEXT_TOKENS
from ctxscope.agent.engine.recorder import counts_as_failed
from ctxscope.agent.profiling.roofline import peak_keys
from ctxscope.agent.records import RecordSink


def _length(text: str) -> int:
    text = text.strip().lower()
    return int(text[:-1]) * 1024 if text.endswith("k") else int(text)


def _lengths(value: str) -> tuple[int, ...]:
    try:
        lengths = tuple(_length(v) for v in value.split(","))
    except ValueError as exc:
        raise click.BadParameter(
            f"{value!r} is not a comma-separated list of lengths such as 1k,4k,16384"
        ) from exc
    if min(lengths) < 1 or max(lengths) > MAX_CONTEXT_TOKENS:
        raise click.BadParameter(
            f"{value!r}: each length must be 1 to {MAX_CONTEXT_TOKENS:,} tokens, as in plans"
        )
    return lengths


def profile_run(
    sink: RecordSink,
    *,
    model: str,
    precision: str,
    device: str,
    settings: Any,
    tiny: bool = False,
    prefer_native: bool = True,
    peaks_key: str | None = None,
    progress_bar: bool = False,
) -> list[Any]:
    """Loads the model, profiles every length and records the run; returns the points."""
    from ctxscope.agent.engine.point import ModelChoice, Session
    from ctxscope.agent.engine.recorder import RunRecorder
    from ctxscope.agent.profiling.roofline import device_description, find_peaks, peaks_by_key
    from ctxscope.agent.profiling.run import emit_profiled, profile_session, profiled_length

    peaks = peaks_by_key(peaks_key) if peaks_key else find_peaks(device_description(device))
    choice = ModelChoice(
        name=model, precision=precision, device=device, tiny=tiny, prefer_native=prefer_native
    )
    plan = {
        "name": f"profile {model}",
        "models": [model],
        "precisions": [precision],
        "logits": settings.logits,
        "tiny": tiny,
        "prefer_native": prefer_native,
        "profile": {
            "context_lengths": list(settings.lengths),
            "phases": list(settings.phases),
            "iterations": settings.iterations,
            "decode": settings.decode,
            "timed": settings.timed_policy is not None,
        },
    }
    points = []
    with RunRecorder(
        sink,
        plan=plan,
        total=len(settings.lengths),
        torch_device=device,
        precision=precision,
        manifest_extra={"device_peaks": peaks.key if peaks else None},
        progress_bar=progress_bar,
    ) as run:
        run.progress(f"{model}/{precision}: loading")
        session = Session(choice)
        steps = profile_session(
            session, settings, peaks, on_step=lambda step: run.progress(f"{model}/{precision}: {step}")
        )
        for point in steps:
            emit_profiled(run, choice, session.spec.family, settings.logits, profiled_length(session, point))
            points.append(point)
    return points


def print_table(model: str, points: list[Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(file=sys.stdout)
    for point in points:
        if point.outcome != "ok":
            console.print(f"{model} @ {point.context_len}: {point.outcome} ({point.error})")
            continue
        for name, phase in point.phases.items():
            details = phase.profile.to_details()
            table = Table(
                title=(
                    f"{model} {name} @ {point.context_len} tokens: share of device time "
                    f"({details['device_time_source']}, {details['passes']} passes, "
                    f"{details['total_ms']:.3f} ms)"
                )
            )
            for column in ("class", "share %", "time ms", "kernels"):
                table.add_column(column, justify="left" if column == "class" else "right")
            for cls, row in details["classes"].items():
                table.add_row(cls, f"{row['share_pct']:.1f}", f"{row['time_ms']:.3f}", str(row["kernels"]))
            console.print(table)
            for item in details["unclassified"][:10]:
                console.print(
                    f"  unclassified: {item['name'][:100]}  {item['time_ms']:.3f} ms x{item['count']}"
                )
            over = phase.roofline.get("over_latency") or phase.roofline.get("over_device_busy")
            if over is not None:
                peak = (
                    f", {100 * over['fraction_of_peak_flops']:.1f}% of peak FLOP/s, "
                    f"{100 * over['fraction_of_peak_bandwidth']:.1f}% of peak bandwidth "
                    f"({over['device_peaks']})"
                    if "fraction_of_peak_flops" in over
                    else " (no peak table entry for this device)"
                )
                console.print(
                    f"  roofline over {over['time_method']} ({over['time_s'] * 1e3:.3f} ms): "
                    f"{over['achieved_tflops']:.2f} TFLOP/s, {over['achieved_gb_s']:.1f} GB/s{peak}"
                )


@click.command()
@click.argument("model")
@click.option("--lengths", default="1k,4k,16k", show_default=True, help="context lengths, e.g. 1k,4k,16384")
@click.option("--precision", type=click.Choice(["bf16", "fp16", "fp32"]), default="bf16", show_default=True)
@click.option(
    "--phase",
    "phases",
    type=click.Choice(["prefill", "decode"]),
    multiple=True,
    default=("prefill",),
    show_default=True,
    help="repeat for both",
)
@click.option("--logits", type=click.Choice(["last", "all"]), default="last", show_default=True)
@click.option(
    "--iterations", type=click.IntRange(min=1), default=3, show_default=True, help="profiled passes per point"
)
@click.option(
    "--decode-path",
    type=click.Choice(["eager", "graph", "auto"]),
    default="eager",
    show_default=True,
    help="eager keeps module labels (a CUDA graph replay runs no Python hooks); graph: the step in a CUDA "
    "graph; auto: the engine's fastest path (on a GPU, the compiled step: fused kernels)",
)
@click.option("--no-timed", is_flag=True, help="skip the timed pass; roofline over device busy time only")
@click.option(
    "--trace-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="keep each pass's Chrome/Perfetto trace here (stays on the device; the result names the file)",
)
@torch_device_option
@click.option(
    "--peaks",
    "peaks_key",
    type=click.Choice(peak_keys()),
    default=None,
    help="peak table entry to use instead of detecting the device",
)
@click.option("--tiny", is_flag=True, help="the zoo's shrunk config (tests)")
@click.option("--hf", "prefer_hf", is_flag=True, help="transformers even where native mamba_ssm exists")
@progress_option
@record_options
def profile(
    model: str,
    lengths: str,
    precision: str,
    phases: tuple[str, ...],
    logits: str,
    iterations: int,
    decode_path: str,
    no_timed: bool,
    trace_dir: Path | None,
    device: str | None,
    peaks_key: str | None,
    tiny: bool,
    prefer_hf: bool,
    no_progress: bool,
    out: Path | None,
    broker: str | None,
    config_path: Path | None,
) -> None:
    """Operator shares of device time per context length, with roofline figures.

    \b
    Exit status:
      0    every length was profiled (a phase that failed after the first is in its record)
      1    at least one length failed (its record says why), or the records could not be written
      2    bad command-line usage
      78   the agent configuration (--config, --broker) cannot be used
      130  interrupted (Ctrl-C)
    """
    from ctxscope.agent import zoo
    from ctxscope.agent.engine.runner import default_device
    from ctxscope.agent.profiling.run import TIMED_POLICY, ProfileSettings
    from ctxscope.agent.streaming import command_sink

    try:
        zoo.get_spec(model)
    except zoo.ZooError as exc:
        raise click.ClickException(str(exc)) from exc
    settings = ProfileSettings(
        lengths=_lengths(lengths),
        phases=tuple(dict.fromkeys(phases)),  # type: ignore[arg-type]
        logits=logits,  # type: ignore[arg-type]
        iterations=iterations,
        decode=decode_path,  # type: ignore[arg-type]
        timed_policy=None if no_timed else TIMED_POLICY,
        trace_dir=trace_dir,
    )
    device = device or default_device()
    with contextlib.ExitStack() as stack:
        sink = command_sink(stack, out, broker, config_path)
        points = profile_run(
            sink,
            model=model,
            precision=precision,
            device=device,
            settings=settings,
            tiny=tiny,
            prefer_native=not prefer_hf,
            peaks_key=peaks_key,
            progress_bar=not no_progress,
        )
    print_table(model, points)
    if any(counts_as_failed(point.outcome) for point in points):
        raise SystemExit(1)
