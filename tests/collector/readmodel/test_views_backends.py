"""The dashboard's views read the same from the SQLite and the PostgreSQL store."""

from __future__ import annotations

from typing import Any

from ctxscope.collector.readmodel import views


def _without_clock(value: Any) -> Any:
    """Drop fields that depend on when the view was built or the record stored."""
    if isinstance(value, dict):
        return {
            k: _without_clock(v)
            for k, v in value.items()
            if k not in ("generated_ns", "last_seen_ns", "last_seen_age_s", "stale")
        }
    if isinstance(value, list):
        return [_without_clock(v) for v in value]
    return value


def test_views_agree_across_backends(store, pg_store, simfleet, feed_store):
    orin, rtx = simfleet.SimDevice("orin-1"), simfleet.SimDevice("rtx-1")
    batches = [
        [orin.meta(), orin.status("online"), orin.telemetry(12.5, 48.0)],
        simfleet.sweep(orin),
        [
            rtx.meta(24 * 2**30),
            rtx.status("busy", run_id="r2"),
            rtx.run_started("r2", 4),
            rtx.progress("r2", 1, 4),
        ],
        [rtx.result("r2", "qwen2.5-0.5b", "transformer", 1024, 5.0, 900.0)],
    ]
    for target in (store, pg_store):
        for batch in batches:
            feed_store(target, batch)
    for build in (
        views.fleet,
        lambda s: views.device(s, "orin-1"),
        lambda s: views.device_live(s, "rtx-1"),
        lambda s: views.comparison(s, [], [], "ttft"),
    ):
        from_sqlite, from_postgres = _without_clock(build(store)), _without_clock(build(pg_store))
        assert from_sqlite == from_postgres
    assert views.device(pg_store, "orin-1")["characterization"]["crossovers"][0]["crossings"]
