"""A device's telemetry over months: the JSON behind the device page's History chart.

/api/devices/<id>/history/channels   the channels with a history: [{source, channel, unit}]
/api/devices/<id>/history?channel=power_w[&source=nvml][&since_ns=][&until_ns=][&max_points=500]

The buckets come from the store (store/history.py): the rollups and the raw telemetry still kept, each
sample counted once, at most `max_points` buckets over [since_ns, until_ns) (by default the day before
now), each with its width and unit; a span without data has no bucket. `source` may be left out when
one source sends the channel. A number that is not finite (a sum past the float range) is null.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

from fastapi import APIRouter, HTTPException, Query

from ctxscope.collector.readmodel.source import FleetSource, require_known_device
from ctxscope.collector.store.history import HistoryBucket

DEFAULT_SPAN_NS = 86400 * 1_000_000_000
MAX_POINTS = 5000
INT64_MAX = 2**63 - 1
# Folds of raw telemetry run at once (seconds of CPU each for a span of weeks): more would take the
# cores that ingest needs. A request that finds them busy for WAIT_S is answered 503 with Retry-After.
CONCURRENT_FOLDS = 2
WAIT_S = 30.0


def history_channels(source: FleetSource, device: str) -> dict[str, Any]:
    channels = source.history_channels(device)
    return {
        "device": device,
        "channels": [{"source": s, "channel": c, "unit": u} for s, c, u in channels],
    }


def _source_of(channels: list[tuple[str, str, str]], channel: str, source: str | None) -> tuple[str, str]:
    """(source, unit) of the channel asked for; 404 when the device has no such channel, 400 when it
    comes from several sources and none was named."""
    matches = [(s, u) for s, c, u in channels if c == channel and source in (None, s)]
    if not matches:
        named = "" if source is None else f" from source {source!r}"
        raise HTTPException(404, f"no telemetry channel {channel!r}{named} on this device")
    sources = sorted({s for s, _ in matches})
    if len(sources) > 1:
        raise HTTPException(400, f"channel {channel!r} comes from sources {sources}: name one with source=")
    return matches[-1]


def _number(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _bucket(b: HistoryBucket) -> dict[str, Any]:
    return {
        "start_ns": b.start_ns,
        "width_s": b.width_s,
        "n": b.n,
        "mean": _number(b.mean),
        "min": _number(b.min),
        "max": _number(b.max),
        "unit": b.unit,
    }


def history(
    source: FleetSource,
    device: str,
    channel: str,
    src: str | None,
    span: tuple[int, int],
    max_points: int,
) -> dict[str, Any]:
    """{device, source, channel, unit, since_ns, until_ns, width_s, buckets}: `width_s` the nominal
    bucket width, each bucket's own in its entry (older rollups may be wider)."""
    src, unit = _source_of(source.history_channels(device), channel, src)
    found = source.telemetry_history(device, src, channel, *span, max_points)
    return {
        "device": device,
        "source": src,
        "channel": channel,
        "unit": found.buckets[-1].unit if found.buckets else unit,
        "since_ns": found.since_ns,
        "until_ns": found.until_ns,
        "width_s": found.width_s,
        "buckets": [_bucket(b) for b in found.buckets],
    }


def _span(since_ns: int | None, until_ns: int | None) -> tuple[int, int]:
    until = time.time_ns() if until_ns is None else until_ns
    since = max(0, until - DEFAULT_SPAN_NS) if since_ns is None else since_ns
    if since >= until:
        raise HTTPException(400, f"since_ns ({since}) must be before until_ns ({until})")
    return since, until


def router(
    source: FleetSource, concurrent_folds: int = CONCURRENT_FOLDS, wait_s: float = WAIT_S
) -> APIRouter:
    routes = APIRouter()
    folds = threading.BoundedSemaphore(concurrent_folds)

    @routes.get("/api/devices/{device}/history/channels")
    def history_channels_json(device: str) -> dict[str, Any]:
        require_known_device(source, device)
        return history_channels(source, device)

    @routes.get("/api/devices/{device}/history")
    def history_json(
        device: str,
        channel: str = Query(..., min_length=1, max_length=128),
        src: str | None = Query(None, alias="source", min_length=1, max_length=128),
        since_ns: int | None = Query(None, ge=0, le=INT64_MAX),
        until_ns: int | None = Query(None, ge=1, le=INT64_MAX),
        max_points: int = Query(500, ge=2, le=MAX_POINTS),
    ) -> dict[str, Any]:
        require_known_device(source, device)
        span = _span(since_ns, until_ns)
        if not folds.acquire(timeout=wait_s):
            raise HTTPException(
                503, f"{concurrent_folds} history reads are running; try again", {"Retry-After": "10"}
            )
        try:
            return history(source, device, channel, src, span, max_points)
        finally:
            folds.release()

    return routes
