"""A bucket of telemetry samples folded exactly: count, sum, minimum and maximum, so that two buckets
merge into one with the counts added, the means weighted by count and the extremes kept. Retention
builds rollups of them (retention.py, rollups.py) and the history read folds them again (history.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Bucket:
    """A rollup being built: its unit, count, sum, minimum and maximum."""

    unit: str
    n: int
    total: float
    low: float
    high: float

    def add(self, n: int, total: float, low: float, high: float) -> None:
        self.n += n
        self.total += total
        self.low = min(self.low, low)
        self.high = max(self.high, high)

    def row(self, series: tuple[str, str, str], bucket_ns: int, width_s: int) -> tuple[object, ...]:
        """The bucket as the UPSERT's parameters."""
        return (*series, self.unit, bucket_ns, width_s, self.n, self.total / self.n, self.low, self.high)
