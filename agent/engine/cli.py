"""`ctxscope agent run PLAN.toml` and `ctxscope agent maxctx MODEL`: thin click commands over the
runner and the max-context search, each recorded as a run (`recorder.py`). Without a broker, records
go to a JSON-lines file.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import click
from pydantic import ByteSize, TypeAdapter, ValidationError

from ctxscope.agent.cliopts import progress_option, record_options, torch_device_option
from ctxscope.agent.engine.limits import MAX_CONTEXT_TOKENS, MAX_TIMEOUT_S
from ctxscope.agent.streaming import command_sink

_BYTES = TypeAdapter(ByteSize)
# maxctx's lengths and bounds are those of a plan's [max_context] table (`plan.MaxContextPlan`)
TOKENS = click.IntRange(1, MAX_CONTEXT_TOKENS)


def _bytes(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(_BYTES.validate_python(value))
    except ValidationError as exc:
        raise click.BadParameter(f"{value!r} is not a size such as 24GiB") from exc


def _table(results: list[Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="results (median, ms; memory GiB)")
    for column in ("point", "outcome", "ttft", "decode/token", "decode path", "peak mem", "max context"):
        table.add_column(column)
    for r in results:
        m = r.metrics

        def median(name: str, scale: float = 1.0, fmt: str = "{:.3f}", metrics: dict[str, Any] = m) -> str:
            return fmt.format(metrics[name].median / scale) if name in metrics else "-"

        table.add_row(
            r.point_id,
            r.outcome,
            median("ttft"),
            median("decode_per_token"),
            r.implementation.get("decode_path", "-"),
            median("memory_peak", 2**30, "{:.2f}"),
            median("max_context", fmt="{:.0f}"),
        )
    Console(file=sys.stdout).print(table)


@click.command()
@click.argument("plan_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@record_options
@torch_device_option
@click.option("--require-fast-kernels", is_flag=True, help="fail instead of falling back to slow kernels")
@click.option("--logits", type=click.Choice(["last", "all"]), default=None, help="override the plan's logits")
@click.option(
    "--attention",
    type=click.Choice(["sdpa-gqa", "transformers-sdpa"]),
    default=None,
    help="override the plan's attention path",
)
@progress_option
@click.option(
    "--telemetry-rate-hz",
    default=20.0,
    show_default=True,
    type=click.FloatRange(min=0.0),
    help="sample power/thermals/clocks and add energy per phase to each result; 0 turns it off",
)
def run(
    plan_file: Path,
    out: Path | None,
    broker: str | None,
    config_path: Path | None,
    device: str | None,
    require_fast_kernels: bool,
    logits: str | None,
    attention: str | None,
    no_progress: bool,
    telemetry_rate_hz: float,
) -> None:
    """Run a sweep plan and write (or stream) its records.

    \b
    Exit status:
      0    every point of the plan succeeded
      1    the plan was refused, at least one point failed (its record says why), or the records
           could not be written
      2    bad command-line usage
      78   the agent configuration (--config, --broker) cannot be used
      130  interrupted (Ctrl-C)
    """
    from ctxscope.agent.engine import plan as plans
    from ctxscope.agent.engine.runner import default_device, run_plan

    try:
        plan = plans.load(plan_file)
        overrides: dict[str, Any] = {}
        if logits:
            overrides["logits"] = logits
        if require_fast_kernels:
            overrides["require_fast_kernels"] = True
        if attention:
            overrides["attention"] = attention
        if overrides:
            plan = plans.validate({**plan.model_dump(), **overrides})
    except plans.PlanError as exc:
        raise click.ClickException(str(exc)) from exc
    if (device or default_device()) == "cuda":
        for warning in plans.index_limit_warnings(plan):
            click.echo(f"warning: {warning}", err=True)
    with contextlib.ExitStack() as stack:
        sink = command_sink(stack, out, broker, config_path)
        observer = None
        if telemetry_rate_hz > 0:
            from ctxscope.agent.telemetry.session import TelemetrySession

            observer = stack.enter_context(TelemetrySession(rate_hz=telemetry_rate_hz, sink=sink))
        summary = run_plan(plan, sink, observer=observer, progress=not no_progress, device=device)
    _table(summary.results)
    click.echo(
        f"run {summary.run_id}: {summary.points_ok} ok, {summary.points_failed} failed; plan {plan.hash[:12]}"
    )
    if summary.points_failed:
        raise SystemExit(1)


@click.command()
@click.argument("model")
@click.option("--precision", type=click.Choice(["bf16", "fp16", "fp32"]), default="bf16")
@click.option("--logits", type=click.Choice(["last", "all"]), default="last")
@click.option(
    "--memory-cap",
    default=None,
    help="emulate a smaller device: the process's whole device memory, CUDA context included, "
    "e.g. 24563MiB (an RTX 4090's total)",
)
@click.option("--start", type=TOKENS, default=1024, show_default=True)
@click.option("--max-tokens", type=TOKENS, default=1_048_576, show_default=True)
@click.option(
    "--upper-guess",
    type=TOKENS,
    default=None,
    help="length probed right after --start instead of twice it (a guess just above the limit)",
)
@click.option(
    "--tolerance",
    type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True),
    default=0.01,
    show_default=True,
    help="relative gap to stop at",
)
@click.option("--step", type=TOKENS, default=None, help="absolute gap to stop at (instead of --tolerance)")
@click.option(
    "--probe-timeout",
    type=click.FloatRange(0.0, MAX_TIMEOUT_S, min_open=True),
    default=120.0,
    show_default=True,
    help="seconds per probe",
)
@torch_device_option
@click.option("--tiny", is_flag=True, help="the zoo's shrunk config (tests)")
@click.option("--hf", "prefer_hf", is_flag=True, help="transformers even where native mamba_ssm exists")
@record_options
def maxctx(
    model: str,
    precision: str,
    logits: Literal["last", "all"],
    memory_cap: str | None,
    start: int,
    max_tokens: int,
    upper_guess: int | None,
    tolerance: float,
    step: int | None,
    probe_timeout: float,
    device: str | None,
    tiny: bool,
    prefer_hf: bool,
    out: Path | None,
    broker: str | None,
    config_path: Path | None,
) -> None:
    """Search the longest context one prefill fits in, each probe in a fresh child process.

    \b
    Exit status:
      0    a length fitted (the first that did not is the limit found, not a failure)
      1    not even --start fitted (the record says why), or the records could not be written
      2    bad command-line usage
      78   the agent configuration (--config, --broker) cannot be used
      130  interrupted (Ctrl-C)
    """
    if start > max_tokens:
        raise click.BadParameter(f"--start {start} is above --max-tokens {max_tokens}", param_hint="--start")
    if upper_guess is not None and not start < upper_guess <= max_tokens:
        raise click.BadParameter(
            f"--upper-guess {upper_guess} must be above --start {start} "
            f"and at most --max-tokens {max_tokens}",
            param_hint="--upper-guess",
        )
    from ctxscope.agent import zoo
    from ctxscope.agent.engine import maxctx as search_mod
    from ctxscope.agent.engine.point import ModelChoice
    from ctxscope.agent.engine.recorder import RunRecorder
    from ctxscope.agent.engine.runner import default_device

    names = [spec.name for spec in zoo.list_models(include_unavailable=False)]
    if model not in names:
        raise click.ClickException(f"unknown model {model!r}; valid names: {', '.join(names)}")
    device = device or default_device()
    cap_text = memory_cap or "none"
    if memory_cap is not None and not search_mod.cap_applies(device):
        cap_text = f"{memory_cap} not applied"
        click.echo(
            f"warning: --memory-cap caps CUDA device memory only: on {device} the search runs without it",
            err=True,
        )
    settings = search_mod.SearchSettings(
        start=start,
        max_tokens=max_tokens,
        rel_tol=tolerance,
        step=step,
        upper_guess=upper_guess,
        probe_timeout_s=probe_timeout,
        memory_cap_bytes=_bytes(memory_cap),
        logits=logits,
    )
    choice = ModelChoice(
        name=model,
        precision=precision,
        device=device,
        tiny=tiny,
        prefer_native=not prefer_hf,
        attention="transformers-sdpa" if logits == "all" else "sdpa-gqa",  # the study's mode: its path
    )
    plan = {
        "name": f"max context {model}",
        "models": [model],
        "precisions": [precision],
        "logits": logits,
        "tiny": tiny,
        "prefer_native": not prefer_hf,
        "max_context": {"enabled": True, **asdict(settings)},
    }

    def show(p: search_mod.Probe) -> None:
        peak = f"{p.peak_bytes / 2**30:.2f} GiB" if p.peak_bytes else "-"
        click.echo(f"  {model} {p.context_len:>9} {p.outcome:<8} {p.wall_s:6.1f} s  peak {peak}", err=True)

    with contextlib.ExitStack() as stack:
        sink = command_sink(stack, out, broker, config_path)
        with RunRecorder(sink, plan=plan, total=1, torch_device=device, precision=precision) as run:
            run.progress(f"{model}/{precision}/max-context")
            family = zoo.get_spec(model).family
            record, result = search_mod.record_search(run, choice, family, settings, on_probe=show)
    summary = f"{model} {precision} logits={logits} cap={cap_text}: {result.summary()}"
    note = record.details.get("limit_note")
    click.echo(f"run {run.run_id}: {summary}; {note}" if note else f"run {run.run_id}: {summary}")
    if run.points_failed:
        raise SystemExit(1)
