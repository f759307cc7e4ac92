"""The calibration's operating point: utilisations measured over a real interval, never a 0 that
stands for "not looked at"."""

from __future__ import annotations

import pytest

from ctxscope.agent.calibrate.run import operating_point
from ctxscope.agent.telemetry import detect
from ctxscope.agent.telemetry.base import Backend


class RateBackend(Backend):
    """Like psutil's CPU percent: a read gives the utilisation since the read before, 0.0 right after open."""

    name = "rate"

    def __init__(self, busy_pct: float) -> None:
        super().__init__()
        self.busy_pct = busy_pct
        self.reads = 0
        self.closed = False

    def available(self) -> bool:
        self._metrics = {"util_cpu_pct": "%"}
        return True

    def open(self) -> None:
        self.reads = 0

    def read(self) -> dict[str, float]:
        self.reads += 1
        return {"util_cpu_pct": 0.0 if self.reads == 1 else self.busy_pct}

    def close(self) -> None:
        self.closed = True


class BrokenBackend(RateBackend):
    name = "broken"

    def read(self) -> dict[str, float]:
        raise RuntimeError("sensor gone")


def test_utilisation_is_read_over_an_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    backend, broken = RateBackend(busy_pct=37.0), BrokenBackend(busy_pct=1.0)
    for b in (backend, broken):
        b.available()
    monkeypatch.setattr(detect, "detect_backends", lambda: [backend, broken])
    point = operating_point("cpu", window_s=0.0)
    assert point["rate"]["now"] == {"util_cpu_pct": 37.0}
    assert point["rate"]["units"] == {"util_cpu_pct": "%"}
    assert point["broken"] == {"error": "RuntimeError: sensor gone"}
    assert backend.closed and broken.closed
