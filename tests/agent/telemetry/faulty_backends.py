"""Backends that fail the ways a board's sensors do, importable by the sampler's spawned process."""

from __future__ import annotations

from ctxscope.agent.telemetry.base import Backend


class Steady(Backend):
    name = "steady"
    max_rate_hz = 50.0

    def __init__(self) -> None:
        super().__init__()
        self._metrics = {"temp_gpu_c": "C"}

    def available(self) -> bool:
        return True

    def read(self) -> dict[str, float]:
        return {"temp_gpu_c": 40.0}


class Raising(Backend):
    """A library fault that is not the telemetry layer's own error (jtop's exception, a KeyError),
    on every read."""

    name = "raising"
    max_rate_hz = 50.0

    def __init__(self) -> None:
        super().__init__()
        self._metrics = {"power_w": "W"}

    def available(self) -> bool:
        return True

    def read(self) -> dict[str, float]:
        raise KeyError("rail")
