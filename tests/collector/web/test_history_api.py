"""The device page's History JSON over a real SQLite store served by uvicorn: a year of rollups and the
raw telemetry of the last minutes in one answer, with units, widths and gaps; bad parameters refused
with a clear 4xx; behind the login when credentials are configured."""

from __future__ import annotations

import json
import math
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from ctxscope.collector.readmodel import history
from ctxscope.collector.store import Store
from ctxscope.collector.store.buckets import Bucket
from ctxscope.collector.store.rollups import write_buckets
from ctxscope.collector.web.app import create_app
from ctxscope.collector.web.auth import Credentials, hash_password
from ctxscope.collector.web.hub import LiveHub
from ctxscope.collector.web.security import WebSecurity
from ctxscope.collector.web.server import WebServer
from tests.collector.web.test_app import get

NS = 1_000_000_000
HOUR, DAY = 3600 * NS, 86400 * NS
# The weeks of the seeded year when the device was off: no rollups at all.
OFF_DAYS = range(200, 207)


def _power(start_ns: int) -> float:
    """The seeded mean power of the bucket at `start_ns`: a slow wave, 10 to 30 W."""
    return 20.0 + 10.0 * math.sin(start_ns / (30 * DAY) * 2 * math.pi)


def seed_year(store: Store, feeder: Any, simfleet: Any, now_ns: int) -> dict[int, Bucket]:
    """A device with a year of power rollups (hours until 30 days ago, then minutes, none on OFF_DAYS
    days ago) and a few seconds of raw telemetry now; the rollups written, by start."""
    device = simfleet.SimDevice("orin-1")
    feeder([device.meta(), device.status("online"), device.telemetry(power_w=25.0, temp_c=50.0)])
    series = ("orin-1", simfleet.SIMULATED, "power_w")
    first_minute = (now_ns - 30 * DAY) // HOUR * HOUR
    starts = [h * HOUR for h in range((now_ns - 365 * DAY) // HOUR, first_minute // HOUR)]
    starts += list(range(first_minute, now_ns - 60 * NS, 60 * NS))
    widths = {start: 3600 if start < first_minute else 60 for start in starts}
    buckets = {
        start: Bucket("W", widths[start], widths[start] * _power(start), _power(start) - 5, _power(start) + 5)
        for start in starts
        if (now_ns - start) // DAY not in OFF_DAYS
    }
    for width in (3600, 60):
        with store._transaction() as cur:
            chosen = {(*series, s): b for s, b in buckets.items() if widths[s] == width}
            write_buckets(store, cur, chosen, width)
    return buckets


def _history(url: str, **params: Any) -> tuple[int, Any]:
    query = urllib.parse.urlencode({"channel": "power_w", **params})
    status, _, body = get(f"{url}/api/devices/orin-1/history?{query}")
    return status, json.loads(body)


def test_a_year_of_history_in_daily_buckets_with_units_and_gaps(served, store, feeder, simfleet) -> None:
    now = time.time_ns()
    buckets = seed_year(store, feeder, simfleet, now)
    since = now - 365 * DAY

    status, answer = _history(served.url, since_ns=since, until_ns=now + NS, max_points=1000)
    assert status == 200, answer
    assert (answer["source"], answer["unit"], answer["width_s"]) == (simfleet.SIMULATED, "W", 86400)
    got = answer["buckets"]
    assert 350 < len(got) <= 1000 and all(b["width_s"] == 86400 and b["unit"] == "W" for b in got)
    assert sum(b["n"] for b in got) == sum(b.n for s, b in buckets.items() if s >= since) + 10  # + raw
    days = {b["start_ns"] for b in got}
    off = [(now - d * DAY) // DAY * DAY for d in OFF_DAYS[1:-1]]
    assert not days & set(off), "a day the device was off has a bucket"
    # one day's bucket is the exact fold of its 24 hourly rollups
    day = (now - 100 * DAY) // DAY * DAY
    hours = [b for s, b in buckets.items() if day <= s < day + DAY]
    (bucket,) = [b for b in got if b["start_ns"] == day]
    assert bucket["n"] == sum(b.n for b in hours) == 24 * 3600
    assert bucket["mean"] == pytest.approx(sum(b.total for b in hours) / bucket["n"], rel=1e-12)
    assert (bucket["min"], bucket["max"]) == (min(b.low for b in hours), max(b.high for b in hours))

    status, recent = _history(served.url, since_ns=now - DAY, until_ns=now + NS, max_points=100)
    assert status == 200 and recent["width_s"] == 900 and len(recent["buckets"]) in (96, 97)
    assert (
        sum(b["n"] for b in recent["buckets"]) == sum(b.n for s, b in buckets.items() if s >= now - DAY) + 10
    )
    status, default = _history(served.url, max_points=100)  # the day before now, by default
    assert status == 200 and default["until_ns"] - default["since_ns"] == DAY
    assert default["until_ns"] >= now and default["buckets"][-1]["start_ns"] > now - HOUR


def test_the_channels_with_a_history_include_those_only_rollups_hold(served, store, feeder, simfleet) -> None:
    seed_year(store, feeder, simfleet, time.time_ns())
    with store._transaction() as cur:
        old = {("orin-1", "jtop", "temp_soc_c", 1_600_000_000 * NS): Bucket("C", 1, 40.0, 40.0, 40.0)}
        write_buckets(store, cur, old, 3600)
    status, _, body = get(served.url + "/api/devices/orin-1/history/channels")
    assert status == 200
    assert json.loads(body)["channels"] == [
        {"source": "jtop", "channel": "temp_soc_c", "unit": "C"},
        {"source": simfleet.SIMULATED, "channel": "power_w", "unit": "W"},
        {"source": simfleet.SIMULATED, "channel": "temp_gpu_c", "unit": "C"},
    ]


@pytest.mark.parametrize(
    ("params", "status", "says"),
    [
        ({"channel": "fan_rpm"}, 404, "no telemetry channel 'fan_rpm'"),
        ({"source": "nvml"}, 404, "from source 'nvml'"),
        ({"since_ns": 2 * DAY, "until_ns": DAY}, 400, "must be before until_ns"),
        ({"since_ns": DAY, "until_ns": DAY}, 400, "must be before until_ns"),
        ({"max_points": 1}, 422, "greater than or equal to 2"),
        ({"max_points": 10**9}, 422, "less than or equal to 5000"),
        ({"since_ns": "yesterday"}, 422, "valid integer"),
        ({"since_ns": -1}, 422, "greater than or equal to 0"),
        ({"channel": ""}, 422, "at least 1 character"),
    ],
)
def test_bad_parameters_are_refused_clearly(served, feeder, simfleet, params, status, says) -> None:
    device = simfleet.SimDevice("orin-1")
    feeder([device.meta(), device.telemetry(power_w=25.0, temp_c=50.0)])
    got, answer = _history(served.url, **params)
    assert got == status, answer
    assert says in json.dumps(answer["detail"])


def test_a_channel_of_two_sources_needs_one_named(served, store, feeder, simfleet) -> None:
    device = simfleet.SimDevice("orin-1")
    feeder([device.meta(), device.telemetry(power_w=25.0, temp_c=50.0)])
    with store._transaction() as cur:
        write_buckets(store, cur, {("orin-1", "nvml", "power_w", 0): Bucket("W", 1, 9.0, 9.0, 9.0)}, 60)
    status, answer = _history(served.url, since_ns=0)
    assert status == 400 and "name one with source=" in answer["detail"]
    status, answer = _history(served.url, since_ns=0, source="nvml")
    assert status == 200 and [b["mean"] for b in answer["buckets"]] == [9.0]
    assert get(served.url + "/api/devices/nope/history?channel=power_w")[0] == 404
    assert get(served.url + "/api/devices/nope/history/channels")[0] == 404


def test_history_needs_a_login_when_credentials_are_configured(
    store: Store, feeder: Any, simfleet: Any, tmp_path: Path, web_client: Any
) -> None:
    feeder([simfleet.SimDevice("orin-1").meta()])
    users = tmp_path / "users"
    users.write_text(f"alice:{hash_password('a long passphrase')}\n")
    security = WebSecurity(credentials=Credentials.load(users))
    server = WebServer(create_app(store, LiveHub(), None, security=security)).start()
    try:
        client = web_client(server.url)
        for path in ("/api/devices/orin-1/history?channel=power_w", "/api/devices/orin-1/history/channels"):
            assert client.request(path)[0] == 401, path
        assert client.login("alice", "a long passphrase")[0] == 200
        assert client.request("/api/devices/orin-1/history/channels")[0] == 200
    finally:
        server.stop()


def test_a_sum_past_the_float_range_is_null_not_a_failed_answer(served, store, feeder, simfleet) -> None:
    """A device may send any finite number: two minutes of 1e308 W fold into an hour whose sum is not
    finite. The answer still comes, that mean null and the extremes kept."""
    device = simfleet.SimDevice("orin-1")
    feeder([device.meta(), device.telemetry(power_w=25.0, temp_c=50.0)])
    huge = {
        ("orin-1", simfleet.SIMULATED, "power_w", m * 60 * NS): Bucket("W", 1, 1e308, 1e308, 1e308)
        for m in (1, 2)
    }
    with store._transaction() as cur:
        write_buckets(store, cur, huge, 60)
    status, answer = _history(served.url, since_ns=0, until_ns=HOUR, max_points=2)
    assert status == 200, answer
    assert [(b["n"], b["mean"], b["max"]) for b in answer["buckets"]] == [(2, None, 1e308)]


def test_history_reads_beyond_the_bound_wait_then_are_refused_with_retry_after(
    store, feeder, simfleet
) -> None:
    """A span of weeks costs seconds of CPU to fold: the reads that run at once are bounded, so that a
    few users clicking "1 y" cannot take the cores ingest needs. One more waits, then gets 503."""
    device = simfleet.SimDevice("orin-1")
    feeder([device.meta(), device.telemetry(power_w=25.0, temp_c=50.0)])
    release, entered = threading.Event(), threading.Event()

    class SlowStore:
        def __getattr__(self, name: str) -> Any:
            return getattr(store, name)

        def telemetry_history(self, *args: Any) -> Any:
            entered.set()
            release.wait(30)
            return store.telemetry_history(*args)

    app = FastAPI()
    app.include_router(history.router(SlowStore(), concurrent_folds=1, wait_s=0.3))
    server = WebServer(app).start()
    try:
        url = f"{server.url}/api/devices/orin-1/history?channel=power_w"
        first: list[int] = []
        reader = threading.Thread(target=lambda: first.append(get(url)[0]))
        reader.start()
        assert entered.wait(10)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=10)
        assert refused.value.code == 503 and refused.value.headers["Retry-After"] == "10"
        release.set()
        reader.join(10)
        assert first == [200]
        assert get(url)[0] == 200, "the bound was not released"
    finally:
        release.set()
        server.stop()
