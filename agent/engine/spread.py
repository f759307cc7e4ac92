"""One point measured in several fresh processes: pooled samples, spread within and between them.

Inside one process the spread of a point is small; between processes (another load, another
allocator layout, another kernel choice) it can be far larger at short contexts. Pooling keeps every
sample (each still one prefill or the mean of k, as its method says) and the record says how far the
processes' medians lie apart.
"""

from __future__ import annotations

import statistics
from typing import Any

from ctxscope.shared.messages import Metric

TIMED = ("ttft", "decode_per_token")
LOOPS = {"ttft": "ttft_loop", "decode_per_token": "decode_loop"}


def _relative_iqr(metric: Metric) -> float:
    return metric.iqr / metric.median if metric.median else 0.0


def pool(replies: list[dict[str, Any]]) -> dict[str, Any]:
    """Merge ok worker replies of one point: timed metrics pool their samples (method extended),
    their loops' windows concatenate (for energy), other figures are the first process's."""
    first = replies[0]
    metrics = dict(first["metrics"])
    details = dict(first["details"])
    spreads: dict[str, Any] = {}
    for name in TIMED:
        per_process = [r["metrics"][name] for r in replies if name in r.get("metrics", {})]
        if len(per_process) != len(replies):
            continue
        medians = [m.median for m in per_process]
        center = statistics.median(medians)
        metrics[name] = Metric(
            unit=per_process[0].unit,
            method=f"{per_process[0].method}; pooled from {len(replies)} fresh processes",
            samples=[s for m in per_process for s in m.samples],
        )
        spreads[name] = {
            "process_medians": medians,
            "within_rel_iqr": [_relative_iqr(m) for m in per_process],
            "between_rel_range": (max(medians) - min(medians)) / center if center else 0.0,
        }
        loop = LOOPS[name]
        if all(loop in r["details"] for r in replies):
            details[loop] = {
                **first["details"][loop],
                "windows": [w for r in replies for w in r["details"][loop]["windows"]],
            }
    details["processes"] = len(replies)
    details["process_spread"] = spreads
    return {
        **first,
        "metrics": metrics,
        "details": details,
        "wall_s": sum(r.get("wall_s") or 0.0 for r in replies),
    }
