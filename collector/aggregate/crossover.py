"""Crossover lengths between a Transformer and an SSM/hybrid on one device, at one precision.

The TTFT ratio r(L) = ttft_transformer / ttft_other is taken at the lengths both were measured at
(medians of the pooled samples); where r crosses 1 the crossover length is interpolated in log-log
(latency curves are close to power laws there): between lengths L0 and L1 with ratios r0 and r1,
L* = exp(x0 - y0 (x1 - x0) / (y1 - y0)), x = ln L, y = ln r. The dashboard, the report and the results
tables of bench/ all take their crossovers from here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from ctxscope.collector.aggregate.points import PointAggregate, SeriesKey, curve
from ctxscope.collector.shrunk import is_shrunk_label

TRANSFORMER_FAMILIES = frozenset({"transformer"})
STATE_SPACE_FAMILIES = frozenset({"ssm", "hybrid"})


@dataclass(frozen=True)
class Crossing:
    length_tokens: float
    faster_above: str  # "transformer" or "other": which side wins beyond the crossing


@dataclass(frozen=True)
class Crossover:
    device: str
    metric: str
    transformer: SeriesKey
    other: SeriesKey
    lengths_tokens: list[int]
    ratios: list[float]  # transformer / other at each common length
    crossings: list[Crossing]

    def as_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "metric": self.metric,
            "transformer": self.transformer.as_dict(),
            "other": self.other.as_dict(),
            "lengths_tokens": self.lengths_tokens,
            "ratios": self.ratios,
            "crossings": [
                {"length_tokens": c.length_tokens, "faster_above": c.faster_above} for c in self.crossings
            ],
        }


def crossings(lengths: Sequence[int], ratios: Sequence[float]) -> list[Crossing]:
    """Where ratio = transformer/other passes from one side of 1 to the other, interpolated linearly in
    (ln length, ln ratio); a length measured exactly at parity on the way is the crossing itself, and a ratio
    that touches 1 (or starts or ends there) without changing side is no crossing."""
    found: list[Crossing] = []
    sides = [(i, r > 1) for i, r in enumerate(ratios) if r != 1]
    for (i, above_before), (j, above_after) in pairwise(sides):
        if above_before == above_after:
            continue
        if j > i + 1:
            length: float = lengths[i + 1]  # the first length measured at parity
        else:
            y0, y1 = math.log(ratios[i]), math.log(ratios[j])
            x0, x1 = math.log(lengths[i]), math.log(lengths[j])
            length = math.exp(x0 - y0 * (x1 - x0) / (y1 - y0))
        found.append(Crossing(length, "other" if above_after else "transformer"))
    return found


def _ratio(a: float, b: float) -> float | None:
    """a / b where its logarithm exists: both positive and the quotient neither 0 nor infinite (a device
    may send any finite number, 1e-320 and 1e300 included)."""
    if not (a > 0 and b > 0):
        return None
    ratio = a / b
    return ratio if 0 < ratio < math.inf else None


def crossovers(aggregates: Iterable[PointAggregate], metric: str = "ttft") -> list[Crossover]:
    """Every Transformer x SSM/hybrid pair of series on the same device, precision and logits mode (an
    fp32 Transformer against a bf16 SSM would time the precisions, not the architectures), both real
    models or both shrunk variants (a shrunk model is never set beside a real one)."""
    points = list(aggregates)
    family = {a.key: a.family for a in points}
    pairs = [
        (t, o)
        for t in sorted(family)
        if family[t] in TRANSFORMER_FAMILIES
        for o in sorted(family)
        if family[o] in STATE_SPACE_FAMILIES
        and (o.device, o.precision, o.logits, is_shrunk_label(o.model))
        == (t.device, t.precision, t.logits, is_shrunk_label(t.model))
    ]
    found = []
    for transformer, other in pairs:
        a = dict((length, s.median) for length, s in curve(points, transformer, metric))
        b = dict((length, s.median) for length, s in curve(points, other, metric))
        usable = {length: ratio for length in set(a) & set(b) if (ratio := _ratio(a[length], b[length]))}
        if len(usable) < 2:
            continue
        common = sorted(usable)
        ratios = [usable[length] for length in common]
        found.append(
            Crossover(
                transformer.device, metric, transformer, other, common, ratios, crossings(common, ratios)
            )
        )
    return found
