"""The History of a span inside the raw window, read from minute summaries where the store keeps them
(SQLite; minutes.py) and from every batch where it does not: the same answer as a fold of every sample,
each counted once, through unaligned spans, batches across minute boundaries, late and long batches,
batches not merged yet, and a store that merged telemetry before it had summaries."""

from __future__ import annotations

import random
import sqlite3
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ctxscope.collector.store import Store, open_store
from ctxscope.collector.store.minutes import DDL, MINUTE_NS
from ctxscope.collector.store.retention import RetentionPolicy, apply_retention
from ctxscope.collector.store.writes import Accepted
from ctxscope.shared.messages import TelemetryChannel
from ctxscope.shared.topics import Channel, topic_for
from tests.collector.store.test_history import (
    DAY,
    DEV,
    NS,
    T0,
    Sample,
    _as_truth,
    _assert_same,
    _batch,
    _write,
)

Truth = dict[int, tuple[int, float, float, float]]


def _truth_in(samples: list[Sample], since: int, until: int, width_s: int) -> Truth:
    grouped: dict[int, list[float]] = defaultdict(list)
    for t, v in samples:
        if since <= t < until and np.isfinite(v):
            grouped[t // (width_s * NS) * width_s * NS].append(v)
    return {s: (len(vs), float(np.mean(vs)), min(vs), max(vs)) for s, vs in grouped.items()}


def _check(store: Store, samples: list[Sample], since: int, until: int, max_points: int) -> None:
    found = store.telemetry_history(DEV, "nvml", "power_w", since, until, max_points)
    _assert_same(_as_truth(found.buckets), _truth_in(samples, since, until, found.width_s))


def _jittered(since: int, n: int, step_s: float, seed: int) -> list[Sample]:
    rng = random.Random(seed)
    return [(since + int(i * step_s * NS) + rng.randrange(NS), rng.uniform(5, 60)) for i in range(n)]


def _spans(since: int, until: int, seed: int) -> list[tuple[int, int]]:
    """The whole span and spans of unaligned ends inside it, minutes to days long."""
    rng = random.Random(seed)
    spans = [(since, until)]
    for _ in range(6):
        a = rng.randrange(since - MINUTE_NS, until)
        spans.append((a, min(until + MINUTE_NS, a + rng.randrange(MINUTE_NS // 2, until - since))))
    return spans


def test_spans_of_merged_and_unmerged_batches_are_folded_exactly(store: Store) -> None:
    """Three days of samples every ~7 s in batches of 13 (most batches cross a minute boundary), one
    not a number; the last hours written after the merge, so not merged yet. Every span and width
    matches a fold of the samples here."""
    since = T0 - 3 * DAY
    samples = _jittered(since, 3 * 86400 // 7, 7.0, seed=3)
    samples[500] = (samples[500][0], float("nan"))
    cut = len(samples) * 9 // 10
    seq = _write(store, samples[:cut], per_batch=13)
    store.merge_staged()
    _write(store, samples[cut:], per_batch=13, first_seq=seq)
    for a, b in _spans(since, T0, seed=5):
        for max_points in (2, 30, 500, 5000):
            _check(store, samples, a, b, max_points)


def _sqlite(store: Store) -> sqlite3.Connection:
    return sqlite3.connect(store.path)  # type: ignore[attr-defined]


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Any:
    opened = open_store(f"sqlite:///{tmp_path / 'collector.db'}")
    yield opened
    opened.close()


def test_the_history_reads_the_minute_summaries(sqlite_store: Store) -> None:
    """A count changed in one summary row in the middle of the span changes the answer: the minutes
    are read from their summaries, not from the batches."""
    since = T0 - DAY
    samples = _jittered(since, 86400 // 10, 10.0, seed=1)
    _write(sqlite_store, samples, per_batch=6)
    sqlite_store.merge_staged()
    before = sum(b.n for b in sqlite_store.telemetry_history(DEV, "nvml", "power_w", since, T0, 500).buckets)
    assert before == len(samples)
    with _sqlite(sqlite_store) as conn:
        (rows,) = conn.execute("SELECT COUNT(*) FROM telemetry_minutes").fetchone()
        assert rows >= 1430  # a row a minute of the day
        conn.execute("UPDATE telemetry_minutes SET n = n + 1000 WHERE bucket_ns = ?", (T0 - DAY // 2,))
    after = sum(b.n for b in sqlite_store.telemetry_history(DEV, "nvml", "power_w", since, T0, 500).buckets)
    assert after == before + 1000


def test_a_late_batch_and_a_long_batch_are_counted_once(store: Store) -> None:
    """A batch of an hour already summarized arrives days late; another holds samples over 25 minutes.
    Both merge into their minutes; every span around them is exact."""
    since = T0 - 2 * DAY
    samples = _jittered(since, 2 * 86400 // 30, 30.0, seed=2)
    seq = _write(store, samples, per_batch=4)
    store.merge_staged()
    late = [(T0 - DAY - 3600 * NS + i * 20 * NS, 100.0 + i) for i in range(40)]
    long = [(T0 - DAY // 2 + i * 50 * NS, 200.0 + i) for i in range(30)]
    seq = _write(store, late, per_batch=40, first_seq=seq)
    _write(store, long, per_batch=30, first_seq=seq)
    store.merge_staged()
    everything = samples + late + long
    for a, b in [*_spans(since, T0, seed=7), (T0 - DAY // 2 + 7 * NS, T0 - DAY // 2 + 20 * 60 * NS)]:
        for max_points in (3, 500):
            _check(store, everything, a, b, max_points)


def test_telemetry_merged_before_the_store_had_summaries_is_read_from_its_batches(
    sqlite_store: Store,
) -> None:
    """A store upgraded with a day of merged telemetry: its summaries start after that day (the
    migration's statement), what comes later is summarized, and a late batch into the old day stays
    raw. Every span is exact."""
    since = T0 - 2 * DAY
    old = _jittered(since, 86400 // 20, 20.0, seed=4)
    seq = _write(sqlite_store, old, per_batch=5)
    sqlite_store.merge_staged()
    with _sqlite(sqlite_store) as conn:  # back to the store as it was before migration 9 ran
        conn.execute("DELETE FROM telemetry_minutes")
        conn.execute("DELETE FROM telemetry_summarized")
        conn.execute(DDL.split(";")[-1])
        (from_ns,) = conn.execute("SELECT from_ns FROM telemetry_summarized").fetchone()
    assert from_ns == (max(t for t, _ in old) // MINUTE_NS + 1) * MINUTE_NS
    new = _jittered(T0 - DAY, 86400 // 20, 20.0, seed=6)
    late = [(since + 3 * 3600 * NS + i * NS, 7.0) for i in range(10)]
    seq = _write(sqlite_store, new, per_batch=5, first_seq=seq)
    _write(sqlite_store, late, per_batch=10, first_seq=seq)
    sqlite_store.merge_staged()
    with _sqlite(sqlite_store) as conn:
        (first,) = conn.execute("SELECT MIN(bucket_ns) FROM telemetry_minutes").fetchone()
    assert first >= from_ns, "a minute before the summaries began was summarized"
    for a, b in _spans(since, T0, seed=8):
        _check(sqlite_store, old + new + late, a, b, 500)


def test_retention_leaves_no_summary_of_a_pruned_sample(sqlite_store: Store) -> None:
    """After a pass prunes five of eight days, no summary row lies below the summaries' start, which
    lies past every pruned sample, and the whole span still counts every sample once."""
    since = T0 - 8 * DAY
    samples = _jittered(since, 8 * 86400 // 60, 60.0, seed=9)
    _write(sqlite_store, samples, per_batch=7)
    apply_retention(sqlite_store, RetentionPolicy(raw_days=3), now_ns=T0)
    with _sqlite(sqlite_store) as conn:
        (from_ns,) = conn.execute("SELECT from_ns FROM telemetry_summarized").fetchone()
        (below,) = conn.execute(
            "SELECT COUNT(*) FROM telemetry_minutes WHERE bucket_ns < ?", (from_ns,)
        ).fetchone()
    cutoff = T0 - 3 * DAY  # the newest pruned batch ended before it, its samples within 7 minutes
    assert cutoff - 7 * MINUTE_NS < from_ns <= cutoff + MINUTE_NS and below == 0
    found = sqlite_store.telemetry_history(DEV, "nvml", "power_w", since, T0, 500)
    assert sum(b.n for b in found.buckets) == len(samples)


def test_a_span_to_the_end_of_time_is_read(store: Store) -> None:
    """A span that ends at the largest time the API takes (2^63 - 1 ns) past summarized minutes."""
    samples = _jittered(T0 - DAY, 1000, 60.0, seed=10)
    _write(store, samples, per_batch=5)
    store.merge_staged()
    _check(store, samples, T0 - DAY, 2**63 - 1, 5000)


def test_a_batch_without_samples_among_merged_ones_changes_nothing(store: Store) -> None:
    """A batch of no samples (its channels empty) merged between others: every sample is still in
    its minute, once."""
    samples = _jittered(T0 - DAY, 2000, 30.0, seed=11)
    seq = _write(store, samples[:1000], per_batch=9)
    empty = _batch(seq, [(T0 - DAY, 0.0)])
    empty = empty.model_copy(
        update={"t_ns": b"", "channels": {"power_w": TelemetryChannel(unit="W", dtype="f8", data=b"")}}
    )
    store.write_batch([Accepted(topic_for(DEV, Channel.TELEMETRY), empty)])
    _write(store, samples[1000:], per_batch=9, first_seq=seq + 1)
    store.merge_staged()
    for a, b in _spans(T0 - DAY, T0, seed=12):
        _check(store, samples, a, b, 500)
