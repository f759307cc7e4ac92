"""Columnar sample chunks and the bounded in-memory ring that phase summaries read from."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Chunk:
    """Consecutive samples of one source: monotonic ns stamps and one float64 column per metric.

    A metric that failed in a given sample holds NaN in that row; unsupported metrics have no column.
    """

    source: str
    t_ns: np.ndarray
    channels: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.t_ns)


def concat(chunks: list[Chunk]) -> Chunk:
    """One chunk from several of the same source, in order; channels missing in a part get NaN."""
    names = sorted({name for c in chunks for name in c.channels})
    columns = {
        name: np.concatenate([c.channels.get(name, np.full(len(c), np.nan)) for c in chunks])
        for name in names
    }
    return Chunk(chunks[0].source, np.concatenate([c.t_ns for c in chunks]), columns)


class SampleRing:
    """Recent samples per source, kept as chunks and dropped whole once older than `max_age_ns`
    behind the newest; merged lazily when read, so adding stays cheap. Thread-safe."""

    def __init__(self, max_age_ns: int) -> None:
        self.max_age_ns = max_age_ns
        self._parts: dict[str, list[Chunk]] = {}
        self._merged: dict[str, Chunk] = {}
        self._lock = threading.Lock()

    def add(self, chunk: Chunk) -> None:
        if not len(chunk):
            return
        with self._lock:
            parts = self._parts.setdefault(chunk.source, [])
            parts.append(chunk)
            horizon = int(chunk.t_ns[-1]) - self.max_age_ns
            while len(parts) > 1 and parts[0].t_ns[-1] < horizon:
                parts.pop(0)
            self._merged.pop(chunk.source, None)

    def sources(self) -> list[str]:
        with self._lock:
            return list(self._parts)

    def latest_ns(self, source: str) -> int | None:
        with self._lock:
            parts = self._parts.get(source)
            return int(parts[-1].t_ns[-1]) if parts else None

    def get(self, source: str) -> Chunk | None:
        """All kept samples of a source as one chunk."""
        with self._lock:
            if source not in self._parts:
                return None
            if source not in self._merged:
                self._merged[source] = concat(self._parts[source])
            return self._merged[source]

    def window(self, source: str, start_ns: int, end_ns: int) -> Chunk | None:
        """Samples inside [start, end] plus the nearest one on each side (for edge interpolation)."""
        data = self.get(source)
        if data is None:
            return None
        lo = max(int(np.searchsorted(data.t_ns, start_ns, side="left")) - 1, 0)
        hi = int(np.searchsorted(data.t_ns, end_ns, side="right")) + 1
        part = slice(lo, hi)
        return Chunk(source, data.t_ns[part], {k: v[part] for k, v in data.channels.items()})
