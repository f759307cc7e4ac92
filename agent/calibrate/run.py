"""Runs the calibration and records it as a run (`engine/recorder.py`): a run start with the operating
point in its manifest, one `result` per figure (family `calibration`), a run end."""

from __future__ import annotations

import statistics
import time
from typing import Any

from ctxscope.agent.calibrate.bench import BENCHMARKS, Figure, Sizes, Timer
from ctxscope.agent.engine.recorder import RunRecorder
from ctxscope.agent.records import RecordSink
from ctxscope.agent.telemetry.base import Backend
from ctxscope.shared.messages import CALIBRATION_FAMILY

# How long after a first read the operating point's sample is taken: utilisations are rates between
# two reads (psutil's CPU percent), and a first read after opening covers no time at all.
OPERATING_POINT_WINDOW_S = 0.5


def operating_point(device: str, window_s: float = OPERATING_POINT_WINDOW_S) -> dict[str, Any]:
    """Clocks, power, temperatures and utilisation now, from the telemetry backends the device offers.

    Each backend's sample `now` is its second read, `window_s` after the first, as the telemetry
    sampler's reads follow the one `open` primes: read at once, psutil's CPU utilisation covers no time
    and gives 0.0, a 0 that would stand for "not measured" where the load was never looked at."""
    from ctxscope.agent.telemetry.detect import detect_backends

    point: dict[str, Any] = {}
    for backend in detect_backends():
        try:
            sample = _read_after(backend, window_s)
        except Exception as exc:  # a backend that fails to read is reported, not fatal
            point[backend.name] = {"error": f"{type(exc).__name__}: {exc}"[:200]}
            continue
        point[backend.name] = {"info": backend.info(), "now": sample, "units": backend.metrics()}
    return point


def _read_after(backend: Backend, window_s: float) -> dict[str, float]:
    """One sample of `backend`, `window_s` after a first read that sets its rates' reference point."""
    backend.open()
    try:
        backend.read()
        time.sleep(window_s)
        return backend.read()
    finally:
        backend.close()


SPREAD = "spread: min..max of the samples"


def _metrics(fig: Figure) -> dict[str, Any]:
    """The figure's time per sample and, where its work is known, one rate per time sample."""
    time_method = f"{fig.method}; one sample: {fig.sample}; {fig.counts()}; {SPREAD}"
    metrics: dict[str, Any] = {
        "calibration_time": {"unit": "ms", "method": time_method, "samples": fig.samples_ms},
    }
    rates = [fig.rate(s) for s in fig.samples_ms if s > 0]
    if rates and rates[0] is not None:
        unit = rates[0][0]
        work = f"{fig.flops:.6g} FLOP" if fig.flops else f"{fig.bytes:.6g} bytes"
        metrics["calibration_rate"] = {
            "unit": unit,
            "method": f"{fig.method}; one sample: analytic work ({work}) / the time of one calibration_time "
            f"sample; {len(rates)} samples after {fig.warmups} warm-ups ({fig.stop}); {SPREAD}",
            "samples": [r[1] for r in rates if r is not None],
        }
    return metrics


def calibrate_run(
    sink: RecordSink, *, device: str, budget_s: float = 100.0, tiny: bool = False, progress_bar: bool = False
) -> list[Figure]:
    """Measures every figure and emits the records. Each benchmark's repetitions get an equal share of
    the time left of `budget_s` (what a quick benchmark leaves goes to the later ones), so that the
    whole calibration stays within it; only each benchmark's minimum repetitions and its set-up,
    warm-ups and compilation (Triton autotuning of the SSD scan) may run past it, and show in each
    result's `details.wall_s`."""
    from ctxscope.agent.profiling.roofline import device_description

    sizes = Sizes.for_device(device, tiny=tiny)
    plan = {"calibrate": {"device": device, "budget_s": budget_s, "tiny": tiny, "sizes": sizes.__dict__}}
    precision = "bf16" if device.startswith("cuda") else "fp32"
    extra = {"device_description": device_description(device), "operating_point": operating_point(device)}
    recorder = RunRecorder(
        sink,
        plan=plan,
        total=len(BENCHMARKS),
        torch_device=device,
        precision=precision,
        manifest_extra=extra,
        progress_bar=progress_bar,
    )
    deadline = time.monotonic() + budget_s
    figures: list[Figure] = []
    with recorder as run:
        for index, bench in enumerate(BENCHMARKS):
            run.progress(f"calib-{bench.__name__}")
            share = max(deadline - time.monotonic(), 0.0) / (len(BENCHMARKS) - index)
            figures.append(_emit(run, bench, device, sizes, Timer(device, share), precision))
    return figures


def _emit(run: RunRecorder, bench: Any, device: str, sizes: Sizes, timer: Timer, precision: str) -> Figure:
    """Run one benchmark and emit its figure as a result (a failing benchmark is recorded as skipped)."""
    bench_start = time.monotonic()
    try:
        fig = bench(device, sizes, timer)
    except Exception as exc:  # one failing benchmark is recorded, the others still run
        fig = Figure(
            bench.__name__,
            bench.__name__,
            1,
            "failed",
            "",
            False,
            absent=f"{type(exc).__name__}: {exc}"[:400],
        )
    ok = fig.absent is None and bool(fig.samples_ms)
    run.result(
        point_id=f"calib-{fig.name.replace('_', '-')}",
        model=f"calib-{fig.name.replace('_', '-')}",
        family=CALIBRATION_FAMILY,
        context_len=max(1, fig.size),
        precision=precision,
        outcome="ok" if ok else "skipped",
        error=fig.absent,
        metrics=_metrics(fig) if ok else {},
        # a skipped benchmark ran nothing: it names no implementation, its details say why it was skipped
        implementation={fig.family: fig.implementation} if ok and fig.implementation else {},
        details={
            **({} if ok else {"skipped": fig.absent or "no samples"}),
            "calibration": {
                "name": fig.name,
                "family": fig.family,
                "reference": fig.reference,
                "flops": fig.flops,
                "bytes": fig.bytes,
                "median_ms": statistics.median(fig.samples_ms) if ok else None,
            },
            "wall_s": time.monotonic() - bench_start,
        },
    )
    return fig
