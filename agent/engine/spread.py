"""One point measured in several fresh processes: pooled samples, spread within and between them.

Inside one process the spread of a point is small; between processes (another load, another
allocator layout, another kernel choice) it can be far larger at short contexts. Pooling keeps every
sample (each still one prefill or the mean of k, as its method says) and the record says how far the
processes' medians lie apart.
"""

from __future__ import annotations

import statistics
from typing import Any

from ctxscope.agent.engine.loop import SAMPLE_WORDS, sample_phrase
from ctxscope.agent.engine.outcome import Measured, PhaseLoop
from ctxscope.shared.messages import Metric

TIMED = {"ttft": "prefill", "decode_per_token": "decode"}
# figures with one sample per timed sample: pooled alike, so that they keep one per pooled sample
PER_SAMPLE = ("decode_floor_fraction",)


def _relative_iqr(metric: Metric) -> float:
    return metric.iqr / metric.median if metric.median else 0.0


def pool(measured: list[Measured]) -> Measured:
    """Merge the outcomes of one point: timed metrics pool their samples (method extended), their
    loops' windows concatenate (for energy), other figures and the implementation are the first
    process's (every process's implementation is listed when they differ)."""
    first = measured[0]
    metrics = dict(first.metrics)
    loops = {loop.phase: loop for loop in first.loops}
    spreads: dict[str, Any] = {}
    for name, phase in TIMED.items():
        per_process = [m.metrics[name] for m in measured if name in m.metrics]
        if len(per_process) != len(measured):
            continue
        medians = [m.median for m in per_process]
        center = statistics.median(medians)
        method = f"{per_process[0].method}; pooled from {len(measured)} fresh processes"
        same_phase = [loop for m in measured for loop in m.loops if loop.phase == phase]
        if len(same_phase) == len(measured):
            windows = [w for loop in same_phase for w in loop.windows]
            loops[phase] = PhaseLoop(
                phase=phase, stop_reason=same_phase[0].stop_reason, inner=same_phase[0].inner, windows=windows
            )
            # each process settles on its own repetitions per window: the method names them all
            one, many = SAMPLE_WORDS[name]
            first_phrase = sample_phrase(same_phase[0].windows, one, many)
            method = method.replace(first_phrase, sample_phrase(windows, one, many), 1)
        metrics[name] = Metric(
            unit=per_process[0].unit, method=method, samples=[s for m in per_process for s in m.samples]
        )
        spreads[name] = {
            "process_medians": medians,
            "within_rel_iqr": [_relative_iqr(m) for m in per_process],
            "between_rel_range": (max(medians) - min(medians)) / center if center else 0.0,
        }
    for name in PER_SAMPLE:
        per_process = [m.metrics[name] for m in measured if name in m.metrics]
        if per_process and len(per_process) == len(measured):
            pooled = f"pooled from {len(measured)} fresh processes, each against its own floor"
            metrics[name] = Metric(
                unit=per_process[0].unit,
                method=f"{per_process[0].method}; {pooled}",
                samples=[s for m in per_process for s in m.samples],
            )
    details = {**first.details, "processes": len(measured), "process_spread": spreads}
    if any(m.implementation != first.implementation for m in measured):
        # e.g. an attention backend trial that came out the other way in one process: the pooled
        # samples then mix paths, and the record (which names the first's) says so
        details["process_implementations"] = [m.implementation for m in measured]
    return first.model_copy(
        update={
            "metrics": metrics,
            "details": details,
            "loops": list(loops.values()),
            "wall_s": sum(m.wall_s for m in measured),
        }
    )
