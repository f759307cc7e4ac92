"""A device's characterization and cross-device comparisons, as JSON-ready dicts for the views."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ctxscope.collector.aggregate.crossover import crossovers
from ctxscope.collector.aggregate.fit import fit_quadratic
from ctxscope.collector.aggregate.maxctx import max_context
from ctxscope.collector.aggregate.points import (
    PointAggregate,
    SeriesKey,
    aggregate_points,
    curve,
    path_labels,
)
from ctxscope.shared.messages import PointResult

TTFT = "ttft"
PEAK_MEMORY = "memory_peak"


def scaling_fits(
    aggregates: Sequence[PointAggregate], metric: str, capacity: float | None = None
) -> list[dict[str, Any]]:
    """Per series: the a + bL + cL^2 least-squares fit of the metric's medians against length and,
    given a capacity in the metric's unit, the length at which the fit reaches it (an extrapolation,
    reported with the fit's residual)."""
    out = []
    for key in sorted({a.key for a in aggregates}):
        points = curve(aggregates, key, metric)
        if not points:
            continue
        fit = fit_quadratic([p[0] for p in points], [p[1].median for p in points], points[0][1].unit)
        if fit is None:
            continue
        out.append(
            {
                **key.as_dict(),
                "metric": metric,
                "fit": fit.as_dict(),
                "capacity": capacity,
                "extrapolated_limit_tokens": fit.length_at(capacity) if capacity is not None else None,
            }
        )
    return out


def memory_fits(aggregates: Sequence[PointAggregate], capacity_mib: float | None) -> list[dict[str, Any]]:
    """Peak-memory fits with the length at which each reaches the device's memory (MiB)."""
    return scaling_fits(aggregates, PEAK_MEMORY, capacity_mib)


def characterize(results: Iterable[PointResult], capacity_mib: float | None = None) -> dict[str, Any]:
    """Everything the device page shows, from raw results (any devices; usually one)."""
    rows = list(results)
    aggregates = aggregate_points(rows)
    limits = max_context(aggregates, rows)
    labels = path_labels([a.key for a in aggregates] + [m.key for m in limits])
    crossings = [c.as_dict() for c in crossovers(aggregates, TTFT)]
    for crossing in crossings:
        for side in ("transformer", "other"):
            _with_path(crossing[side], labels)
    return {
        "points": [a.as_dict() for a in aggregates],
        "max_context": [_with_path(m.as_dict(), labels) for m in limits],
        "crossovers": crossings,
        "memory_fits": [_with_path(f, labels) for f in memory_fits(aggregates, capacity_mib)],
        "ttft_fits": [_with_path(f, labels) for f in scaling_fits(aggregates, TTFT)],
    }


def _with_path(entry: dict[str, Any], labels: dict[SeriesKey, str]) -> dict[str, Any]:
    """The entry of one series with `path`: what tells its kernel path apart from the model's others."""
    key = SeriesKey(
        entry["device"], entry["model"], entry["precision"], entry["logits"], entry["implementation"]
    )
    entry["path"] = labels.get(key, "")
    return entry


def compare(results: Iterable[PointResult], metric: str = TTFT) -> list[dict[str, Any]]:
    """One row per (model, precision, logits, kernel path, context length) with the metric's summary
    per device, so devices (or models, by reading rows) stand side by side; kernel paths never share
    a row, so one device's native and fallback measurements never overwrite each other."""
    rows: dict[tuple[str, str, str, str, int], dict[str, Any]] = {}
    for aggregate in aggregate_points(results):
        summary = aggregate.metrics.get(metric)
        if summary is None:
            continue
        key: SeriesKey = aggregate.key
        row = rows.setdefault(
            (key.model, key.precision, key.logits, key.implementation, aggregate.context_len),
            {
                "model": key.model,
                "family": aggregate.family,
                "precision": key.precision,
                "logits": key.logits,
                "implementation": key.implementation,
                "context_len": aggregate.context_len,
                "metric": metric,
                "by_device": {},
            },
        )
        row["by_device"][key.device] = summary.as_dict()
    return [rows[k] for k in sorted(rows)]
