"""What the dashboard reads: the subset of the collector store's read API it relies on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from fastapi import HTTPException

from ctxscope.collector.store.base import TelemetrySeries
from ctxscope.collector.store.history import TelemetryHistory
from ctxscope.shared.ids import DEVICE_ID_PATTERN


class FleetSource(Protocol):
    def devices(self, names: Sequence[str] = ()) -> list[dict[str, Any]]: ...

    def device(self, device: str) -> dict[str, Any] | None: ...

    def results(self, device: str, run_id: str | None = None) -> list[dict[str, Any]]: ...

    def runs(self, device: str | None = None) -> list[dict[str, Any]]: ...

    def command_acks(self, device: str) -> list[dict[str, Any]]: ...

    def logs(self, device: str, limit: int = 100) -> list[dict[str, Any]]: ...

    def telemetry_channels(self, device: str) -> list[tuple[str, str, str]]: ...

    def latest_telemetry(
        self, device: str, source: str, channel: str, seconds: float
    ) -> TelemetrySeries | None: ...

    def history_channels(self, device: str) -> list[tuple[str, str, str]]: ...

    def telemetry_history(
        self, device: str, source: str, channel: str, since_ns: int, until_ns: int, max_points: int
    ) -> TelemetryHistory: ...


def require_known_device(source: FleetSource, device: str) -> None:
    """404 unless `device` is a well-formed id the store has seen (its own row read, not the fleet's)."""
    if not DEVICE_ID_PATTERN.fullmatch(device) or source.device(device) is None:
        raise HTTPException(404, f"unknown device {device!r}")
