"""Phase windows: the meeting point of the sweep engine and telemetry.

The engine marks when each phase (prefill, decode, idle) ran, on the monotonic clock that every
process on the device shares (`time.monotonic_ns()`); a phase observer (telemetry) turns the windows
into physical figures (energy, power, temperature, throttling) for the point's result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ctxscope.shared.messages import Metric


class DeviceBusy(RuntimeError):
    """The GPU was busy (another process on it) in every window meant to measure idle power; the
    message says with what."""


@dataclass(frozen=True)
class PhaseWindow:
    """One contiguous stretch of one phase, possibly holding several repetitions of it.

    `tokens` is the number of tokens processed inside the window (all repetitions together), so
    that energy per token can be derived; `repetitions` how many times the phase ran in it.
    """

    name: str
    start_ns: int
    end_ns: int
    tokens: int
    repetitions: int = 1

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9


@dataclass
class PhaseReport:
    """What an observer learned about a point's windows: metrics to merge into the result (each with
    unit, method and samples; absent when not measured), flags such as throttling, and details."""

    metrics: dict[str, Metric] = field(default_factory=dict)
    flags: dict[str, bool] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


class PhaseObserver(Protocol):
    @property
    def min_window_ns(self) -> int:
        """The engine repeats a short phase until its window spans at least this long."""
        ...

    def summarize(self, windows: Sequence[PhaseWindow]) -> PhaseReport:
        """Figures for the given windows; may wait briefly for the samples that cover them."""
        ...
