"""Power and temperature traces: the JSON behind the fleet page's sparklines and the device page's
live trace.

/api/devices/<id>/trace?seconds=600&points=600   one device's last `seconds` of power and temperature
/api/fleet/traces?seconds=300&points=60           the same, small, for every device

A trace ends at the device's newest sample (so a device that stopped, or an imported run, still shows
its last minutes) and is thinned to at most `points` points by averaging equal time bins. Power is
the `power_w` channel; temperature the GPU sensor (`temp_gpu_c`), else the first `temp_*_c` one.
A channel the device never sent is null, never zeros.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Query

from ctxscope.collector.readmodel.source import FleetSource, require_known_device

POWER = "power_w"
PREFERRED_TEMPERATURE = "temp_gpu_c"


def _thin(wall_ns: np.ndarray, values: np.ndarray, points: int) -> tuple[np.ndarray, np.ndarray]:
    if len(values) <= points:
        return wall_ns, values
    edges = np.linspace(wall_ns[0], wall_ns[-1], points + 1)
    bins = np.clip(np.searchsorted(edges, wall_ns, side="right") - 1, 0, points - 1)
    counts = np.bincount(bins, minlength=points)
    keep = counts > 0
    mean_t = np.bincount(bins, weights=wall_ns.astype(np.float64), minlength=points)[keep] / counts[keep]
    mean_v = np.bincount(bins, weights=values, minlength=points)[keep] / counts[keep]
    return mean_t.astype(np.int64), mean_v


def _series(source: FleetSource, device: str, src: str, channel: str, seconds: float, points: int) -> Any:
    series = source.latest_telemetry(device, src, channel, seconds)
    if series is None or not len(series.values):
        return None
    wall, values = _thin(series.wall_ns, series.values, points)
    return {
        "source": src,
        "channel": channel,
        "unit": series.unit,
        "wall_ns": [int(t) for t in wall],
        "values": [float(v) for v in values],
    }


def device_trace(source: FleetSource, device: str, seconds: float, points: int) -> dict[str, Any]:
    """{device, seconds, power, temperature}: each {source, channel, unit, wall_ns, values} or None."""
    channels = source.telemetry_channels(device)
    power = next(((s, c) for s, c, _ in channels if c == POWER), None)
    temps = [(s, c) for s, c, _ in channels if c.startswith("temp_") and c.endswith("_c")]
    temperature = next(((s, c) for s, c in temps if c == PREFERRED_TEMPERATURE), temps[0] if temps else None)
    return {
        "device": device,
        "seconds": seconds,
        "power": _series(source, device, *power, seconds, points) if power else None,
        "temperature": _series(source, device, *temperature, seconds, points) if temperature else None,
    }


def router(source: FleetSource) -> APIRouter:
    routes = APIRouter()

    @routes.get("/api/devices/{device}/trace")
    def trace_json(
        device: str,
        seconds: float = Query(600.0, gt=0, le=86400),
        points: int = Query(600, ge=2, le=5000),
    ) -> dict[str, Any]:
        require_known_device(source, device)
        return device_trace(source, device, seconds, points)

    @routes.get("/api/fleet/traces")
    def fleet_traces_json(
        seconds: float = Query(300.0, gt=0, le=86400),
        points: int = Query(60, ge=2, le=1000),
    ) -> dict[str, Any]:
        return {"devices": [device_trace(source, d["device"], seconds, points) for d in source.devices()]}

    return routes
