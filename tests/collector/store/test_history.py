"""A channel's history over months, on both backends: rollups and raw telemetry folded into one answer,
each sample counted once, exact folds, gaps kept as gaps, and the hour tier."""

from __future__ import annotations

import random
import threading
from collections import defaultdict
from typing import Any

import numpy as np
import pytest

from ctxscope.collector.store import Accepted, Store
from ctxscope.collector.store.buckets import Bucket
from ctxscope.collector.store.history import LADDER_S, HistoryBucket, history_width_s
from ctxscope.collector.store.retention import RetentionPolicy, apply_retention
from ctxscope.collector.store.rollups import coarsen, rollups, write_buckets
from ctxscope.shared.messages import TelemetryBatch, TelemetryChannel
from ctxscope.shared.topics import Channel, topic_for

DEV = "orin-1"
STREAM = "00000000000000c1"
NS = 1_000_000_000
MINUTE, HOUR, DAY = 60 * NS, 3600 * NS, 86400 * NS
T0 = 1_700_000_000 // 86400 * DAY  # midnight UTC, "now" of these tests (in the past: see live_order)

Sample = tuple[int, float]


def _batch(seq: int, samples: list[Sample], unit: str = "W") -> TelemetryBatch:
    mono0 = 10**12
    wall = np.asarray([t for t, _ in samples], dtype=np.int64)
    offset = int(wall[0]) - mono0
    return TelemetryBatch(
        device=DEV,
        stream=STREAM,
        seq=seq,
        ts=int(wall[-1] - offset),
        source="nvml",
        mono_to_wall_ns=offset,
        t_ns=(wall - offset).astype("<i8").tobytes(),
        channels={
            "power_w": TelemetryChannel(
                unit=unit, dtype="f8", data=np.asarray([v for _, v in samples], "<f8").tobytes()
            )
        },
    )


def _write(store: Store, samples: list[Sample], per_batch: int, first_seq: int = 1) -> int:
    """Store the samples in batches of `per_batch`; the next free seq."""
    batches = [
        _batch(first_seq + i, samples[start : start + per_batch])
        for i, start in enumerate(range(0, len(samples), per_batch))
    ]
    for start in range(0, len(batches), 100):
        chunk = batches[start : start + 100]
        store.write_batch([Accepted(topic_for(DEV, Channel.TELEMETRY), b) for b in chunk])
    return first_seq + len(batches)


def _truth(samples: list[Sample], width_s: int) -> dict[int, tuple[int, float, float, float]]:
    """start -> (n, mean, min, max) of the finite samples, folded here without the store."""
    grouped: dict[int, list[float]] = defaultdict(list)
    for t, v in samples:
        if np.isfinite(v):
            grouped[t // (width_s * NS) * width_s * NS].append(v)
    return {s: (len(vs), float(np.mean(vs)), min(vs), max(vs)) for s, vs in grouped.items()}


def _as_truth(buckets: list[HistoryBucket]) -> dict[int, tuple[int, float, float, float]]:
    return {b.start_ns: (b.n, b.mean, b.min, b.max) for b in buckets}


def _assert_same(got: dict[int, Any], want: dict[int, Any]) -> None:
    assert sorted(got) == sorted(want)
    for start, (n, mean, low, high) in want.items():
        assert got[start][0] == n, start
        assert got[start][1] == pytest.approx(mean, rel=1e-12), start
        assert got[start][2:] == (low, high), start


def _history(store: Store, since: int, until: int, max_points: int) -> Any:
    return store.telemetry_history(DEV, "nvml", "power_w", since, until, max_points)


def test_history_is_the_same_before_and_after_retention_rolls_raw_telemetry_up(store: Store) -> None:
    """Twelve days of samples every 30 s; retention rolls the older seven up (a batch straddles the
    cutoff, so a minute is part rollup and part raw). The hourly history, folded from raw alone, then
    from rollups and raw across the boundary, is the same and matches a fold done here."""
    rng = random.Random(7)
    since = T0 - 12 * DAY
    samples = [(since + i * 30 * NS + rng.randrange(NS), rng.uniform(5, 60)) for i in range(12 * 2880)]
    samples[100] = (samples[100][0], float("nan"))  # an unread sample: in no bucket, raw or rolled up
    _write(store, samples, per_batch=41)
    want = _truth(samples, 3600)

    before = _history(store, since, T0, 300)
    assert before.width_s == 3600 and len(before.buckets) == 288
    _assert_same(_as_truth(before.buckets), want)

    outcome = apply_retention(store, RetentionPolicy(raw_days=5, rollup_s=60), now_ns=T0)
    assert outcome.batches_pruned > 0 and outcome.samples_unread == 1
    raw = store.latest_telemetry(DEV, "nvml", "power_w", 12 * 86400.0)
    assert raw is not None, "no raw telemetry left"
    raw_minutes = {int(t) // MINUTE * MINUTE for t in raw.wall_ns}
    assert raw_minutes & {r["bucket_ns"] for r in rollups(store, DEV, "power_w")}, "no minute split"

    after = _history(store, since, T0, 300)
    _assert_same(_as_truth(after.buckets), want)
    assert all(b.width_s == 3600 and b.unit == "W" for b in after.buckets)
    assert sum(b.n for b in after.buckets) == len(samples) - 1


def test_a_rollup_refolds_exactly_at_every_width_of_the_ladder(store: Store) -> None:
    """Minute rollups of known count, mean and extremes: each width's buckets weight the means by
    count and keep the extremes (not the mean of means, not the extremes of means)."""
    since = T0 - DAY
    buckets = {
        ("orin-1", "nvml", "power_w", since + m * MINUTE): Bucket("W", 1 + m % 7, 0.0, -float(m), 2.0 * m)
        for m in range(1440)
        if m % 97 != 0  # some minutes have no data
    }
    for (_, _, _, start), bucket in buckets.items():
        bucket.total = (start // MINUTE % 13) * bucket.n  # mean = minute index mod 13
    with store._transaction() as cur:
        write_buckets(store, cur, buckets, 60)
    for width_s, max_points in zip(LADDER_S[:5], (1440, 288, 96, 24, 4), strict=True):
        history = _history(store, since, T0, max_points)
        assert history.width_s == width_s
        want: dict[int, Bucket] = {}
        for (_, _, _, start), b in buckets.items():
            key = start // (width_s * NS) * width_s * NS
            want.setdefault(key, Bucket("W", 0, 0.0, b.low, b.high)).add(b.n, b.total, b.low, b.high)
        got = _as_truth(history.buckets)
        assert sorted(got) == sorted(want)
        for start, b in want.items():
            assert got[start] == (b.n, pytest.approx(b.total / b.n, rel=1e-12), b.low, b.high)


def test_the_hour_tier_keeps_its_width_beside_narrower_buckets(store: Store) -> None:
    """Rollups older than the coarse cutoff are hours: at a 15 min width they stay whole hours, the
    minutes after them are folded into 15 min buckets, and a late minute inside an hour already
    folded joins that hour. No two buckets overlap, and every sample is counted once."""
    since = T0 - 3 * DAY
    minutes = {
        ("orin-1", "nvml", "power_w", since + m * MINUTE): Bucket("W", 2, 2.0 * m, m, m + 1)
        for m in range(4320)
    }
    with store._transaction() as cur:
        write_buckets(store, cur, minutes, 60)
    assert coarsen(store, T0 - 2 * DAY, 3600) == (1440, 24)
    late = {("orin-1", "nvml", "power_w", since + 5 * HOUR + 7 * MINUTE): Bucket("W", 3, 300.0, -5.0, 500.0)}
    with store._transaction() as cur:
        write_buckets(store, cur, late, 60)

    history = _history(store, since, T0, 300)  # 72 h in 15 min: 288 buckets
    assert history.width_s == 900
    widths = [b.width_s for b in history.buckets]
    assert widths == [3600] * 24 + [900] * 192
    for a, b in zip(history.buckets, history.buckets[1:], strict=False):
        assert a.start_ns + a.width_s * NS <= b.start_ns, "overlapping buckets"
    assert sum(b.n for b in history.buckets) == 2 * 4320 + 3
    fifth = history.buckets[5]
    assert (fifth.start_ns, fifth.n, fifth.min, fifth.max) == (since + 5 * HOUR, 123, -5.0, 500.0)
    assert fifth.mean == pytest.approx((sum(2.0 * m for m in range(300, 360)) + 300.0) / 123)
    # at an hour or wider, the hours and the minutes fold alike
    daily = _history(store, since, T0, 3)
    assert [(b.width_s, b.n) for b in daily.buckets] == [(86400, 2880 + 3), (86400, 2880), (86400, 2880)]


def test_a_gap_stays_a_gap(store: Store) -> None:
    """Telemetry on the first and third day of a span: the second has no bucket (no zeros), and a
    span of no data has no buckets at all."""
    since = T0 - 3 * DAY
    samples = [(since + i * 10 * NS, 40.0 + i % 5) for i in range(8640)]
    samples += [(since + 2 * DAY + i * 10 * NS, 20.0) for i in range(8640)]
    _write(store, samples, per_batch=60)
    history = _history(store, since, T0, 72)
    assert history.width_s == 3600
    starts = [b.start_ns for b in history.buckets]
    assert starts == [since + h * HOUR for h in (*range(24), *range(48, 72))]
    assert all(b.n == 360 and b.min > 0 for b in history.buckets)
    assert _history(store, since + DAY, since + 2 * DAY, 72).buckets == []


def test_at_most_max_points_buckets_for_any_span(store: Store) -> None:
    rng = random.Random(3)
    samples = sorted((T0 - rng.randrange(400 * DAY), 1.0) for _ in range(5000))
    _write(store, samples, per_batch=50)
    for _ in range(30):
        since = T0 - rng.randrange(1, 400 * DAY)
        until = since + rng.randrange(1, T0 - since + DAY)
        max_points = rng.choice([1, 2, 7, 100, 1000])
        history = _history(store, since, until, max_points)
        assert len(history.buckets) <= max_points
        assert sum(b.n for b in history.buckets) == sum(since <= t < until for t, _ in samples)


@pytest.mark.parametrize(
    ("span_ns", "max_points", "width_s"),
    [
        (DAY, 1000, 300),
        (7 * DAY, 1000, 900),
        (30 * DAY, 1000, 3600),
        (365 * DAY, 1000, 86400),
        (DAY, 1440, 60),
        (10 * 365 * DAY, 100, 37 * 86400),
    ],
)
def test_the_width_is_the_narrowest_that_fits(span_ns: int, max_points: int, width_s: int) -> None:
    assert history_width_s(T0 - span_ns, T0, max_points) == width_s


def test_history_lists_channels_only_rollups_hold(store: Store) -> None:
    """A channel the device no longer sends, whose raw telemetry has all aged out, still has its
    history: the channels sent now come from the device row, the others from the rollups."""
    _write(store, [(T0 - 40 * DAY, 3.0), (T0 - 40 * DAY + NS, 5.0)], per_batch=2)
    assert store.history_channels(DEV) == [("nvml", "power_w", "W")]
    temp = TelemetryChannel(unit="C", dtype="f8", data=np.asarray([50.0], "<f8").tobytes())
    now = _batch(9, [(T0 - NS, 50.0)]).model_copy(update={"channels": {"temp_c": temp}})
    store.write_batch([Accepted(topic_for(DEV, Channel.TELEMETRY), now)])
    apply_retention(store, RetentionPolicy(raw_days=30), now_ns=T0)
    assert store.latest_telemetry(DEV, "nvml", "power_w", 3600) is None, "power_w's raw telemetry is kept"
    assert store.telemetry_channels(DEV) == [("nvml", "temp_c", "C")]
    assert store.history_channels(DEV) == [("nvml", "power_w", "W"), ("nvml", "temp_c", "C")]
    (bucket,) = _history(store, T0 - 41 * DAY, T0 - 2 * DAY, 500).buckets
    assert (bucket.n, bucket.mean, bucket.width_s) == (2, 4.0, 6 * 3600)


def test_a_retention_pass_while_reading_never_hides_or_repeats_a_sample(store: Store) -> None:
    """Each answer is read in one statement, so a pass that commits meanwhile (a chunk of batches
    deleted and rolled up at once) is seen whole or not at all."""
    samples = [(T0 - 20 * DAY + i * 7 * NS, 1.0) for i in range(60000)]
    _write(store, samples, per_batch=50)  # 1,200 batches: six chunks of a retention pass
    counts: list[int] = []
    done = threading.Event()

    def prune() -> None:
        try:
            apply_retention(store, RetentionPolicy(raw_days=7), now_ns=T0)
        finally:
            done.set()

    thread = threading.Thread(target=prune)
    thread.start()
    while not done.is_set():
        counts.append(sum(b.n for b in _history(store, T0 - 30 * DAY, T0, 30).buckets))
    thread.join()
    counts.append(sum(b.n for b in _history(store, T0 - 30 * DAY, T0, 30).buckets))
    assert rollups(store, DEV, "power_w"), "retention rolled nothing up"
    assert set(counts) == {len(samples)}, "an answer saw part of a retention pass"


def test_the_channels_sent_now_come_from_the_device_row_not_a_scan(store: Store, monkeypatch: Any) -> None:
    """Listing a device's channels is on every device page and history request; a scan of its telemetry
    costs about a second per day of it (17 channels a second), so the list comes from the device row's
    `live` column: the channels of each source's newest batch."""
    _write(store, [(T0 - DAY, 3.0)], per_batch=1)
    temp = TelemetryChannel(unit="C", dtype="f8", data=np.asarray([50.0], "<f8").tobytes())
    store.write_batch(
        [
            Accepted(
                topic_for(DEV, Channel.TELEMETRY),
                _batch(9, [(T0, 50.0)]).model_copy(update={"channels": {"temp_c": temp}}),
            )
        ]
    )
    asked: list[str] = []
    query = store._query
    monkeypatch.setattr(store, "_query", lambda sql, params=(): asked.append(sql) or query(sql, params))
    assert store.telemetry_channels(DEV) == [("nvml", "temp_c", "C")]
    assert not [sql for sql in asked if "telemetry_series" in sql], asked
