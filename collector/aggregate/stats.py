"""Summaries of pooled raw samples: median, quartiles, extremes, with unit and method kept."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ctxscope.collector.aggregate.units import canonical
from ctxscope.shared.messages import Metric


class UnitMismatch(ValueError):
    """Samples of one quantity came in units of different dimensions."""


@dataclass(frozen=True)
class Summary:
    """Statistics of every raw sample of one quantity, in `unit`; `methods` lists how they were taken."""

    unit: str
    methods: tuple[str, ...]
    n: int
    median: float
    p25: float
    p75: float
    minimum: float
    maximum: float

    @property
    def iqr(self) -> float:
        return self.p75 - self.p25

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["methods"] = list(self.methods)
        out["iqr"] = self.iqr
        return out


def summarize(metrics: Iterable[Metric]) -> Summary:
    """Pool the raw samples of several measurements of one quantity (converted to a canonical unit)."""
    values: list[float] = []
    units: set[str] = set()
    methods: list[str] = []
    for metric in metrics:
        unit, factor = canonical(metric.unit)
        units.add(unit)
        values.extend(x * factor for x in metric.samples)
        if metric.method not in methods:
            methods.append(metric.method)
    if not values:
        raise ValueError("no samples to summarize")
    if len(units) != 1:
        raise UnitMismatch(f"cannot pool samples in units {sorted(units)}")
    array = np.asarray(values, dtype=np.float64)
    p25, median, p75 = np.percentile(array, [25, 50, 75])
    return Summary(
        unit=units.pop(),
        methods=tuple(methods),
        n=int(array.size),
        median=float(median),
        p25=float(p25),
        p75=float(p75),
        minimum=float(array.min()),
        maximum=float(array.max()),
    )
