"""The devices' `live` column (the newest value of each telemetry channel, kept at ingest) gives the
fleet view what reading the telemetry tables gives, on both backends, whatever order batches come in."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import numpy as np

from ctxscope.collector.readmodel import views
from ctxscope.collector.store import open_store
from ctxscope.shared.messages import TelemetryBatch, TelemetryChannel


def batch(dev, source: str, start_ns: int, power: list[float], temp: float | None = None) -> TelemetryBatch:
    t = np.asarray([start_ns + i * 100_000_000 for i in range(len(power))], dtype="<i8")
    channels = {"power_w": TelemetryChannel(unit="W", dtype="f4", data=np.asarray(power, "<f4").tobytes())}
    if temp is not None:
        channels["temp_gpu_c"] = TelemetryChannel(
            unit="C", dtype="f4", data=np.full(len(power), temp, "<f4").tobytes()
        )
    return TelemetryBatch(
        **dev.envelope(), source=source, mono_to_wall_ns=10**18, t_ns=t.tobytes(), channels=channels
    )


def test_the_live_column_matches_the_telemetry_tables(store, pg_store, simfleet, feed_store):
    dev = simfleet.SimDevice("orin-1")
    newer = batch(dev, "jtop", 2_000_000_000, [5.0, 6.0, 7.5], temp=51.0)
    older = batch(dev, "jtop", 1_000_000_000, [9.0, 9.5])  # arrives after the newer one
    other = batch(dev, "host", 1_500_000_000, [3.0])  # a second source, older than jtop's newest
    for target in (store, pg_store):
        feed_store(target, [dev.meta(), newer])
        feed_store(target, [older, other])
        (row,) = target.devices()
        kept = views.stored_live(row["live"])
        assert kept == views.live_telemetry(target, "orin-1")
        assert kept["power_w"] == 7.5 and kept["temperature_c"] == 51.0
        assert kept["channels"]["power_w"]["wall_ns"] == 10**18 + 2_200_000_000
        assert set(row["live"]) == {"jtop", "host"}
        # the fleet view uses the column
        assert views.fleet(target)["devices"][0]["telemetry"] == kept


def test_a_store_from_before_the_column_still_shows_live_values(tmp_path: Path, simfleet, feed_store) -> None:
    """Devices whose telemetry came before the upgrade (no live value yet) are read from the tables."""
    path = tmp_path / "c.db"
    store = open_store(f"sqlite:///{path}")
    dev = simfleet.SimDevice("orin-1")
    feed_store(store, [dev.meta(), batch(dev, "jtop", 1_000_000_000, [4.0, 4.5])])
    store.close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE devices SET live = NULL")
    reopened = open_store(f"sqlite:///{path}")
    try:
        shown = views.fleet(reopened)["devices"][0]["telemetry"]
        assert shown["power_w"] == 4.5
        assert shown == views.live_telemetry(reopened, "orin-1")
    finally:
        reopened.close()


def test_one_sample_dated_years_ahead_does_not_hold_the_live_column(store, pg_store, simfleet, feed_store):
    """A board whose clock was briefly a century ahead: its next batch, on time, shows in the column
    (a board whose clock always runs ahead is ordered by its own clock: the other tests' times)."""
    dev = simfleet.SimDevice("orin-1")
    for target in (store, pg_store):
        feed_store(target, [dev.meta(), batch(dev, "jtop", 2**62 - 10**18, [99.0])])
        feed_store(target, [batch(dev, "jtop", time.time_ns() - 10**18, [7.0])])
        (row,) = target.devices()
        assert views.stored_live(row["live"])["power_w"] == 7.0
    # both staged, then merged at once (SQLite): the merge picks each source's newest batch
    dev2 = simfleet.SimDevice("orin-2")
    feed_store(store, [dev2.meta(), batch(dev2, "jtop", 2**62 - 10**18, [99.0])])
    feed_store(store, [batch(dev2, "jtop", time.time_ns() - 10**18, [7.0])])
    store.merge_staged()
    (stored,) = store._query("SELECT live FROM devices WHERE device = 'orin-2'", ())
    assert json.loads(stored["live"])["jtop"]["channels"]["power_w"]["value"] == 7.0


def test_of_a_channel_two_sources_send_the_one_dated_ahead_of_its_arrival_loses() -> None:
    def entry(wall_ns: int, value: float, ahead: bool) -> dict:
        channels = {"power_w": {"unit": "W", "value": value}}
        return {"wall_ns": wall_ns, "channels": channels, **({"ahead": True} if ahead else {})}

    live = {"jtop": entry(2**62, 99.0, ahead=True), "nvml": entry(10**18, 7.0, ahead=False)}
    assert views.stored_live(live)["power_w"] == 7.0
