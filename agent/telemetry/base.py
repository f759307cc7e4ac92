"""The telemetry backend interface: one vendor per module, each saying which metrics it supports.

A backend is built (and probed) in the agent's process, then pickled to the sampler process, where
`open()` acquires its resources (NVML handles, a jtop client, a tegrastats child) and `read()` returns
one sample. Metric names carry their unit (`power_w`, `temp_gpu_c`); a metric the device does not
support is absent from `metrics()` and from every sample, never reported as 0.

Shared channel names, so that phase summaries work the same on every device:
- `power_w`: the power that energy per phase integrates (board input or GPU, see `power_method`);
- `energy_j`: a cumulative hardware energy counter (cross-check of the integral);
- `temp_<sensor>_c`, `clock_gpu_mhz`, `clock_mem_mhz`;
- `throttle_power_cap`, `throttle_thermal`, `throttle_hw_slowdown`: 1.0 while engaged, else 0.0.
"""

from __future__ import annotations

import abc
import time
from typing import ClassVar


class TelemetryError(RuntimeError):
    """A telemetry source failed; vendor errors are translated into this once, at the boundary."""


# Channels whose values need float64 on the wire (cumulative counters lose joules in float32).
PRECISE_UNITS = frozenset({"J", "B"})

_SUFFIX_UNITS = (("_w", "W"), ("_j", "J"), ("_c", "C"), ("_mhz", "MHz"), ("_bytes", "B"), ("_pct", "%"))


def unit_of(metric: str) -> str:
    """The unit a metric's name carries (`power_w` -> W); flags such as `throttle_thermal` are 0/1."""
    for suffix, unit in _SUFFIX_UNITS:
        if metric.endswith(suffix):
            return unit
    if metric.startswith("throttle_"):
        return "flag"
    raise ValueError(f"metric name {metric!r} carries no unit")


class Backend(abc.ABC):
    """One telemetry source. Subclasses set `name` and implement the abstract methods."""

    name: str
    # Highest rate at which the source yields fresh values; the sampler never polls faster.
    max_rate_hz: ClassVar[float] = 1000.0
    _metrics: dict[str, str]
    _info: dict[str, str]
    _power_method: str | None

    @abc.abstractmethod
    def available(self) -> bool:
        """Whether this source works on this machine. Never raises; probes supported metrics."""

    def __init__(self) -> None:
        # What the source supports on this machine, filled in by `available()`.
        self._metrics: dict[str, str] = {}
        self._info: dict[str, str] = {}
        self._power_method: str | None = None

    def metrics(self) -> dict[str, str]:
        """Supported metric name -> unit, as found by `available()`; empty when unavailable."""
        return dict(self._metrics)

    def info(self) -> dict[str, str]:
        """Static facts about the source (model, driver, power mode); empty when there are none."""
        return dict(self._info)

    @property
    def power_method(self) -> str | None:
        """How `power_w` is obtained (sensor, averaging window), or None when it is not supported."""
        return self._power_method

    def open(self) -> None:  # noqa: B027 - sources without resources need no setup
        """Acquire what `read()` needs; called in the process that samples."""

    def close(self) -> None:  # noqa: B027
        """Release what `open()` acquired."""

    @abc.abstractmethod
    def read(self) -> dict[str, float]:
        """One sample of the supported metrics; a metric that failed this time is left out."""

    def drain(self) -> list[tuple[int, dict[str, float]]]:
        """Samples taken since the last call, each with its `time.monotonic_ns()` stamp.

        Polled sources take one sample now; sources that push lines on their own clock
        (tegrastats) return every line that arrived, stamped when it arrived, or none.
        """
        before = time.monotonic_ns()
        values = self.read()
        stamp = (before + time.monotonic_ns()) // 2
        return [(stamp, values)] if values else []

    def dtype_of(self, metric: str) -> str:
        """Wire dtype of a metric's channel: float64 for counters and byte counts, else float32."""
        return "f8" if self.metrics().get(metric) in PRECISE_UNITS else "f4"
