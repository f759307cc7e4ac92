"""A store that lives for years: schema migrations from the first release, and telemetry retention."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ctxscope.collector.store import Accepted, Store, open_store
from ctxscope.collector.store.migrations import LATEST, MIGRATIONS, SchemaTooNew, applied_versions, migrate
from ctxscope.collector.store.migrations import TABLE as SCHEMA_MIGRATIONS_TABLE
from ctxscope.collector.store.retention import RetentionPolicy, apply_retention
from ctxscope.collector.store.rollups import Bucket, coarsen, rollups, write_buckets
from ctxscope.shared.messages import Log, TelemetryBatch, TelemetryChannel
from ctxscope.shared.topics import Channel, topic_for

# The schema of the first release, as its store/base.py created it (frozen here: this is what stores
# in the field hold).
FIRST_RELEASE_DDL = """
CREATE TABLE IF NOT EXISTS devices (
    device TEXT PRIMARY KEY, state TEXT, birth BIGINT, status {json}, meta {json}, meta_birth BIGINT,
    first_seen_ns BIGINT NOT NULL, last_seen_ns BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    device TEXT NOT NULL, stream TEXT NOT NULL, seq BIGINT NOT NULL, kind TEXT NOT NULL,
    ts BIGINT NOT NULL, received_ns BIGINT NOT NULL, PRIMARY KEY (device, stream, seq));
CREATE TABLE IF NOT EXISTS runs (
    device TEXT NOT NULL, run_id TEXT NOT NULL, plan {json}, plan_hash TEXT, total_points BIGINT,
    manifest {json}, started_ts BIGINT, done BIGINT, total BIGINT, point TEXT, progress_seq BIGINT,
    outcome TEXT, points_ok BIGINT, points_failed BIGINT, error TEXT, finished_ts BIGINT,
    PRIMARY KEY (device, run_id));
CREATE TABLE IF NOT EXISTS results (
    device TEXT NOT NULL, stream TEXT NOT NULL, seq BIGINT NOT NULL, ts BIGINT NOT NULL,
    run_id TEXT NOT NULL, point_id TEXT NOT NULL, model TEXT NOT NULL, family TEXT NOT NULL,
    context_len BIGINT NOT NULL, precision TEXT NOT NULL, logits TEXT NOT NULL, outcome TEXT NOT NULL,
    error TEXT, metrics {json} NOT NULL, implementation {json} NOT NULL, manifest {json} NOT NULL,
    details {json} NOT NULL, PRIMARY KEY (device, stream, seq));
CREATE INDEX IF NOT EXISTS results_by_run ON results (device, run_id);
CREATE TABLE IF NOT EXISTS telemetry (
    device TEXT NOT NULL, stream TEXT NOT NULL, seq BIGINT NOT NULL, ts BIGINT NOT NULL,
    source TEXT NOT NULL, n BIGINT NOT NULL, mono_to_wall_ns BIGINT NOT NULL,
    wall_start_ns BIGINT, wall_end_ns BIGINT, t_ns {blob} NOT NULL, PRIMARY KEY (device, stream, seq));
CREATE INDEX IF NOT EXISTS telemetry_by_time ON telemetry (device, wall_end_ns);
CREATE TABLE IF NOT EXISTS telemetry_channels (
    device TEXT NOT NULL, stream TEXT NOT NULL, seq BIGINT NOT NULL, channel TEXT NOT NULL,
    unit TEXT NOT NULL, dtype TEXT NOT NULL, data {blob} NOT NULL,
    PRIMARY KEY (device, stream, seq, channel));
CREATE TABLE IF NOT EXISTS logs (
    device TEXT NOT NULL, stream TEXT NOT NULL, seq BIGINT NOT NULL, ts BIGINT NOT NULL,
    level TEXT NOT NULL, logger TEXT NOT NULL, message TEXT NOT NULL, PRIMARY KEY (device, stream, seq));
CREATE TABLE IF NOT EXISTS command_acks (
    device TEXT NOT NULL, stream TEXT NOT NULL, seq BIGINT NOT NULL, ts BIGINT NOT NULL,
    command_id TEXT NOT NULL, name TEXT NOT NULL, accepted {bool} NOT NULL, reason TEXT, run_id TEXT,
    PRIMARY KEY (device, stream, seq));
CREATE TABLE IF NOT EXISTS rejects (
    reason TEXT NOT NULL, topic TEXT NOT NULL, count BIGINT NOT NULL, last_detail TEXT NOT NULL,
    last_example {blob} NOT NULL, last_ns BIGINT NOT NULL, PRIMARY KEY (reason, topic))
"""
STREAM = "00000000000000b1"
NS = 1_000_000_000
DAY_NS = 86400 * NS


def _first_release_store(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """Build a store with the first release's schema and one device's log line; return its URL."""
    rows = [
        "INSERT INTO devices VALUES ('orin-1', 'offline', 1, NULL, NULL, NULL, 5, 6)",
        "INSERT INTO records VALUES ('orin-1', '" + STREAM + "', 1, 'log', 7, 8)",
        "INSERT INTO logs VALUES ('orin-1', '" + STREAM + "', 1, 7, 'WARNING', 'agent', 'written by 0.1')",
    ]
    if backend == "sqlite":
        path = tmp_path / "old.db"
        conn = sqlite3.connect(path)
        conn.executescript(FIRST_RELEASE_DDL.format(json="TEXT", blob="BLOB", bool="INTEGER") + ";")
        for row in rows:
            conn.execute(row)
        conn.commit()
        conn.close()
        return f"sqlite:///{path}"
    import psycopg

    url = str(request.getfixturevalue("pg_url"))
    with psycopg.connect(url) as pg:
        for statement in FIRST_RELEASE_DDL.format(json="JSONB", blob="BYTEA", bool="INTEGER").split(";"):
            if statement.strip():
                pg.execute(statement)
        for row in rows:
            pg.execute(row)
    return url


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_first_release_store_upgrades_at_open(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = _first_release_store(backend, tmp_path, request)
    store = open_store(url)
    try:
        assert applied_versions(store) == list(range(1, LATEST + 1))
        # The old data is intact and readable through the new code.
        assert [log["message"] for log in store.logs("orin-1")] == ["written by 0.1"]
        assert store.record_count("orin-1") == 1
        assert rollups(store, "orin-1") == []  # the table of migration 2 exists
        assert migrate(store, 0) == []  # applying again does nothing
    finally:
        store.close()
    store = open_store(url)  # reopening neither fails nor re-applies
    try:
        assert applied_versions(store) == list(range(1, LATEST + 1))
        with store._transaction() as cur:
            cur.execute("INSERT INTO schema_migrations VALUES (999, 'from the future', 0)")
    finally:
        store.close()
    with pytest.raises(SchemaTooNew, match="schema version 999"):
        open_store(url)


def _batch(seq: int, wall_start_ns: int, offsets_s: list[float], power: list[float]) -> TelemetryBatch:
    mono0 = 10**12
    t = np.asarray([mono0 + int(o * NS) for o in offsets_s], dtype="<i8")
    return TelemetryBatch(
        device="orin-1",
        stream=STREAM,
        seq=seq,
        ts=int(t[-1]),
        source="nvml",
        mono_to_wall_ns=wall_start_ns - mono0,
        t_ns=t.tobytes(),
        channels={
            "power_w": TelemetryChannel(unit="W", dtype="f4", data=np.asarray(power, "<f4").tobytes()),
            "temp_gpu_c": TelemetryChannel(
                unit="C", dtype="f4", data=np.full(len(power), 50.0, "<f4").tobytes()
            ),
        },
    )


def _write(store: Store, *batches: TelemetryBatch) -> Any:
    return store.write_batch([Accepted(topic_for("orin-1", Channel.TELEMETRY), b) for b in batches])


def test_retention_rolls_up_old_telemetry_and_keeps_recent(store: Store) -> None:
    now = 1_800_000_000 * NS
    w0 = ((now - 10 * DAY_NS) // (60 * NS)) * 60 * NS  # a minute boundary ten days ago
    a = _batch(1, w0, [float(i) for i in range(10)], [float(v) for v in range(1, 11)])  # 0..9 s
    b = _batch(2, w0, [30.0 + 5 * i for i in range(10)], [float(v) for v in range(100, 110)])  # 30..75 s
    recent = _batch(3, now - DAY_NS, [0.0, 1.0], [7.0, 9.0])
    _write(store, a, b, recent)
    policy = RetentionPolicy(raw_days=7, rollup_s=60)

    # First pass: only batch a is older than the cutoff.
    first = apply_retention(store, policy, now_ns=w0 + 20 * NS + 7 * DAY_NS)
    assert (first.batches_pruned, first.samples_rolled_up) == (1, 20)
    # Second pass: batch b, whose first bucket merges with a's.
    second = apply_retention(store, policy, now_ns=now)
    assert second.batches_pruned == 1
    power = {r["bucket_ns"]: r for r in rollups(store, "orin-1", "power_w")}
    assert sorted(power) == [w0, w0 + 60 * NS]
    first_minute = list(range(1, 11)) + list(range(100, 106))  # a, then b's samples at 30..55 s
    assert power[w0]["n"] == len(first_minute)
    assert power[w0]["mean"] == pytest.approx(np.mean(first_minute))
    assert (power[w0]["min"], power[w0]["max"]) == (1.0, 105.0)
    assert (power[w0 + 60 * NS]["n"], power[w0 + 60 * NS]["mean"]) == (4, pytest.approx(107.5))
    assert all(r["unit"] == "W" and r["bucket_s"] == 60 for r in power.values())
    assert [r["mean"] for r in rollups(store, "orin-1", "temp_gpu_c")] == [50.0, 50.0]

    # The recent batch is still raw; pruned batches are gone, and their keys still stop a redelivery.
    latest = store.latest_telemetry("orin-1", "nvml", "power_w", 3600.0)
    assert latest is not None and latest.values.tolist() == [7.0, 9.0]
    assert store.latest_telemetry("orin-1", "nvml", "power_w", 20 * 86400.0).values.tolist() == [7.0, 9.0]
    assert _write(store, a).duplicates == 1
    assert apply_retention(store, policy, now_ns=now).batches_pruned == 0


def test_pruned_batches_leave_no_key_rows_and_still_refuse_their_redelivery(store: Store) -> None:
    """A pruned batch's key row used to stay for as long as the store ran (one row a batch, a day at a
    batch a second is 86,400); its stream's seqs are now kept as ranges: a range spans kept records
    (a log here), a seq never stored splits it, and the counts and gaps a device shows stay whole."""
    now = 1_800_000_000 * NS
    w0 = ((now - 10 * DAY_NS) // (60 * NS)) * 60 * NS
    old = {seq: _batch(seq, w0 + seq * 60 * NS, [0.0, 1.0], [1.0, 2.0]) for seq in (1, 2, 3, 5, 6, 8)}
    log = Log(device="orin-1", stream=STREAM, seq=4, ts=1, level="info", message="kept")
    recent = _batch(9, now - DAY_NS, [0.0], [5.0])
    _write(store, *old.values(), recent)
    store.write_batch([Accepted(topic_for("orin-1", Channel.LOG), log)])
    # seq 7 never arrived
    policy = RetentionPolicy(raw_days=7, rollup_s=60)

    assert apply_retention(store, policy, now_ns=now).batches_pruned == 6

    def key_rows() -> list[int]:
        return [r["seq"] for r in store._query("SELECT seq FROM records ORDER BY seq")]

    def ranges() -> list[tuple[int, int, int]]:
        rows = store._query("SELECT lo, hi, pruned FROM pruned_keys ORDER BY lo")
        return [(r["lo"], r["hi"], r["pruned"]) for r in rows]

    assert key_rows() == [4, 9]
    assert ranges() == [(1, 6, 5), (8, 8, 1)]
    assert store.record_count("orin-1") == store.record_count() == 8
    assert [(g.first, g.last) for g in store.gaps("orin-1")] == [(7, 7)]
    (stream,) = store.streams("orin-1")
    assert (stream["records"], stream["first_seq"], stream["last_seq"]) == (8, 1, 9)
    assert store.record_seqs("orin-1", STREAM) == [4, 9]

    # every pruned batch redelivered is a duplicate; the one never stored is new, and once pruned it
    # joins the ranges on both sides
    assert _write(store, *old.values()).duplicates == 6
    missing = _write(store, _batch(7, w0 + 7 * 60 * NS, [0.0], [3.0]))
    assert (missing.stored, missing.duplicates) == (1, 0)
    assert apply_retention(store, policy, now_ns=now).batches_pruned == 1
    assert key_rows() == [4, 9] and ranges() == [(1, 8, 7)]
    assert _write(store, *old.values(), _batch(7, w0, [0.0], [3.0])).duplicates == 7
    assert store.record_count("orin-1") == 9 and store.gaps("orin-1") == []
    assert apply_retention(store, policy, now_ns=now).batches_pruned == 0
    counts = {(r["bucket_ns"] - w0) // (60 * NS): r["n"] for r in rollups(store, "orin-1", "power_w")}
    assert counts == {1: 2, 2: 2, 3: 2, 5: 2, 6: 2, 7: 1, 8: 2}, "a redelivery was folded in again"


def test_retention_leaves_unread_samples_out_of_the_rollups_and_goes_on(store: Store) -> None:
    """NaN is what an agent records for a metric it could not read: it once made a bucket's mean NULL,
    failed every retention pass at that batch, and so stopped pruning for the whole store."""
    now = 1_800_000_000 * NS
    w0 = ((now - 10 * DAY_NS) // (60 * NS)) * 60 * NS
    nan, inf = float("nan"), float("inf")
    partly = _batch(1, w0, [0.0, 1.0, 2.0, 3.0], [10.0, nan, 30.0, -inf])
    unread = _batch(2, w0 + 60 * NS, [0.0, 1.0], [nan, nan])  # a bucket of unread samples alone
    later = _batch(3, w0 + 120 * NS, [0.0], [5.0])
    _write(store, partly, unread, later)
    outcome = apply_retention(store, RetentionPolicy(raw_days=7, rollup_s=60), now_ns=now)
    assert outcome.batches_pruned == 3
    # 7 timestamps of two channels: 4 power samples unread (NaN, -inf), counted apart from the rest
    assert (outcome.samples_rolled_up, outcome.samples_unread) == (10, 4)
    power = {(r["bucket_ns"] - w0) // (60 * NS): r for r in rollups(store, "orin-1", "power_w")}
    assert sorted(power) == [0, 2]
    assert (power[0]["n"], power[0]["mean"], power[0]["min"], power[0]["max"]) == (2, 20.0, 10.0, 30.0)
    assert (power[2]["n"], power[2]["mean"]) == (1, 5.0)
    assert len(rollups(store, "orin-1", "temp_gpu_c")) == 3


def test_retention_prunes_a_batch_without_samples_at_its_first_pass(store: Store) -> None:
    """A batch of no samples has no end time, so no cutoff ever reached it: its rows stayed for as
    long as the store ran. It has nothing to roll up; a pass prunes it at once, and its key still
    refuses a redelivery."""
    now = 1_800_000_000 * NS
    empty = TelemetryBatch(
        device="orin-1", stream=STREAM, seq=1, ts=1, source="nvml", mono_to_wall_ns=0, t_ns=b"", channels={}
    )
    recent = _batch(2, now - DAY_NS, [0.0], [5.0])
    _write(store, empty, recent)
    store.merge_staged()  # the log's batches too, not only the staged ones
    outcome = apply_retention(store, RetentionPolicy(raw_days=7, rollup_s=60), now_ns=now)
    assert (outcome.batches_pruned, outcome.samples_rolled_up, outcome.buckets_written) == (1, 0, 0)
    assert [r["seq"] for r in store._query("SELECT seq FROM records ORDER BY seq")] == [2]
    assert _write(store, empty).duplicates == 1
    assert store.record_count("orin-1") == 2
    assert apply_retention(store, RetentionPolicy(raw_days=7, rollup_s=60), now_ns=now).batches_pruned == 0


def test_rollups_older_than_the_coarse_cutoff_fold_into_hours_exactly(store: Store) -> None:
    """Minute rollups kept for good grew a store by about 1 GB a device a year; past
    `coarse_after_days` they are folded into hours, exactly (counts, means by count, min, max), and a
    late batch for a folded hour joins that hour."""
    now = 1_800_000_000 * NS
    hour = 3600 * NS
    h0 = ((now - 100 * DAY_NS) // hour) * hour
    two_hours = _batch(1, h0, [30.0 * i for i in range(240)], [float(i) for i in range(240)])
    recent = _batch(2, now - 40 * DAY_NS, [0.0, 1.0], [7.0, 9.0])
    _write(store, two_hours, recent)
    policy = RetentionPolicy(raw_days=30, rollup_s=60, coarse_after_days=90, coarse_s=3600)

    outcome = apply_retention(store, policy, now_ns=now)
    assert outcome.batches_pruned == 2
    # 120 minutes of two channels folded into 2 hours of two channels
    assert (outcome.rollups_coarsened, outcome.coarse_buckets_written) == (240, 4)
    power = [
        (r["bucket_ns"], r["bucket_s"], r["n"], r["mean"], r["min"], r["max"])
        for r in rollups(store, "orin-1", "power_w")
    ]
    assert power[:2] == [
        (h0, 3600, 120, pytest.approx(59.5), 0.0, 119.0),
        (h0 + hour, 3600, 120, pytest.approx(179.5), 120.0, 239.0),
    ]
    assert [(r[1], r[2], r[3]) for r in power[2:]] == [(60, 2, 8.0)]  # 40 days old: still minutes
    assert [(r["bucket_s"], r["n"]) for r in rollups(store, "orin-1", "temp_gpu_c")][:2] == [(3600, 120)] * 2

    # A late batch for the first hour: its first minute's rollup has the hour's key and merges at once,
    # its thirtieth minute's is folded by the same pass.
    late = _batch(3, h0, [0.0, 1800.0], [1000.0, -5.0])
    _write(store, late)
    again = apply_retention(store, policy, now_ns=now)
    assert (again.batches_pruned, again.rollups_coarsened) == (1, 2)
    first = rollups(store, "orin-1", "power_w")[0]
    assert (first["bucket_ns"], first["bucket_s"], first["n"], first["min"], first["max"]) == (
        h0,
        3600,
        122,
        -5.0,
        1000.0,
    )
    assert first["mean"] == pytest.approx((sum(range(120)) + 1000 - 5) / 122)
    assert len(rollups(store, "orin-1", "power_w")) == 3
    assert apply_retention(store, policy, now_ns=now).rollups_coarsened == 0


def test_retention_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="raw_days"):
        RetentionPolicy(raw_days=-1)
    with pytest.raises(ValueError, match="rollup_s"):
        RetentionPolicy(rollup_s=0)
    with pytest.raises(ValueError, match="coarse_after_days"):
        RetentionPolicy(coarse_after_days=-1)
    for coarse_s in (60, 90):  # not wider, not a multiple
        with pytest.raises(ValueError, match="multiple of rollup_s"):
            RetentionPolicy(rollup_s=60, coarse_s=coarse_s)


def test_collectors_opening_one_new_postgresql_store_at_once_all_succeed(pg_url: str) -> None:
    """Collectors of a share group start together on an empty database: the baseline schema and the
    migrations are made once, under the advisory lock, and no opening fails on a half-made table."""
    opened: list[Store] = []
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def open_one() -> None:
        start.wait()
        try:
            opened.append(open_store(pg_url))
        except BaseException as exc:  # every failure is reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert errors == [] and len(opened) == 6
        assert applied_versions(opened[0]) == list(range(1, LATEST + 1))
    finally:
        for store in opened:
            store.close()


def test_retention_passes_of_two_collectors_never_fold_a_batch_twice(pg_url: str) -> None:
    """While another collector's pass holds a batch (here: a client holding its row), a pass skips it
    instead of folding it too (which counted its samples twice) and waiting to delete it; the batch
    is folded once, by a later pass."""
    import psycopg

    stores = [open_store(pg_url), open_store(pg_url)]
    now = 1_800_000_000 * NS
    w0 = ((now - 10 * DAY_NS) // (60 * NS)) * 60 * NS
    _write(stores[0], _batch(1, w0, [0.0, 1.0], [1.0, 2.0]), _batch(2, w0, [10.0, 11.0], [3.0, 4.0]))
    policy = RetentionPolicy(raw_days=7, rollup_s=60)
    other_pass = psycopg.connect(pg_url)
    other_pass.execute("SELECT 1 FROM telemetry WHERE seq = 2 FOR UPDATE")
    done: list[int] = []
    pass_ = threading.Thread(
        target=lambda: done.append(apply_retention(stores[1], policy, now).batches_pruned)
    )
    try:
        pass_.start()
        pass_.join(10)
        assert done == [1], "the pass waited for, or folded, the batch another pass holds"
        other_pass.rollback()
        assert apply_retention(stores[0], policy, now).batches_pruned == 1
        (power,) = rollups(stores[0], "orin-1", "power_w")
        assert (power["n"], power["mean"]) == (4, 2.5)
    finally:
        pass_.join(10)
        other_pass.close()
        for store in stores:
            store.close()


def test_coarsening_passes_of_two_collectors_fold_every_rollup_once(pg_url: str) -> None:
    """Two collectors folding one store's minute rollups at once: every hour ends with the counts and
    means of all its minutes, once, and neither pass fails (locking rows and skipping those the other
    held, each pass waited on the other's deleted rows: a deadlock)."""
    stores = [open_store(pg_url), open_store(pg_url)]
    hour = 3600 * NS
    h0 = 1_700_000_000 * NS // hour * hour
    minutes = 2 * 24 * 60  # two days of three series: more rows than one chunk
    buckets = {
        ("orin-1", "nvml", channel, h0 + m * 60 * NS): Bucket("W", 2, 2.0 * m, float(m), float(m))
        for channel in ("power_w", "temp_gpu_c", "clock_gpu_mhz")
        for m in range(minutes)
    }
    with stores[0]._transaction() as cur:
        write_buckets(stores[0], cur, buckets, 60)
    results: list[tuple[int, int]] = []
    errors: list[BaseException] = []

    def fold(store: Store) -> None:
        try:
            results.append(coarsen(store, h0 + minutes * 60 * NS, 3600))
        except BaseException as exc:  # a deadlock between the two passes would land here
            errors.append(exc)

    passes = [threading.Thread(target=fold, args=(store,)) for store in stores]
    try:
        for thread in passes:
            thread.start()
        for thread in passes:
            thread.join(60)
        assert errors == []
        assert sum(folded for folded, _ in results) == len(buckets)
        for channel in ("power_w", "temp_gpu_c", "clock_gpu_mhz"):
            rows = rollups(stores[0], "orin-1", channel)
            assert [r["bucket_s"] for r in rows] == [3600] * 48
            for i, row in enumerate(rows):
                first = i * 60
                assert (row["n"], row["min"], row["max"]) == (120, float(first), float(first + 59))
                assert row["mean"] == pytest.approx(first + 29.5)
    finally:
        for thread in passes:
            thread.join(10)
        for store in stores:
            store.close()


def _schema_5_store(path: Path) -> None:
    """A SQLite store as the release before migration 6 left it: batch 1 merged into the device-keyed
    tables, batch 2 staged and not merged (a collector stopped between two merges)."""
    conn = sqlite3.connect(path)
    conn.executescript(FIRST_RELEASE_DDL.format(json="TEXT", blob="BLOB", bool="INTEGER") + ";")
    conn.execute(SCHEMA_MIGRATIONS_TABLE)
    for migration in MIGRATIONS[:5]:
        ddl = migration.ddl.format(json="TEXT", blob="BLOB", bool="INTEGER", key="INTEGER", devices_room="")
        for statement in ddl.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("INSERT INTO schema_migrations VALUES (?, ?, 0)", (migration.version, migration.name))
    wall = 1_800_000_000 * NS
    merged, staged = (
        _batch(1, wall, [0.0, 1.0], [7.0, 8.0]),
        _batch(2, wall + 2 * NS, [0.0, 1.0], [9.0, 10.0]),
    )
    conn.execute("INSERT INTO devices VALUES ('orin-1', 'online', 1, NULL, NULL, NULL, 5, 6, NULL)")
    conn.execute("INSERT INTO records VALUES ('orin-1', ?, 1, 'telemetry', ?, 6)", (STREAM, merged.ts))
    for seq, b, table in ((1, merged, "telemetry"), (2, staged, "staged_telemetry")):
        t = b.timestamps()
        ends = (int(t[0] + b.mono_to_wall_ns), int(t[-1] + b.mono_to_wall_ns))
        head = ("orin-1", STREAM, seq, b.ts) if seq == 1 else (1, "orin-1", STREAM, seq, b.ts, 7, "{}")
        conn.execute(
            f"INSERT INTO {table} VALUES ({', '.join('?' * (len(head) + 6))})",
            (*head, "nvml", len(t), b.mono_to_wall_ns, *ends, b.t_ns),
        )
        for name, channel in b.channels.items():
            key = ("orin-1", STREAM, 1) if seq == 1 else (1,)
            conn.execute(
                f"INSERT INTO {'telemetry_channels' if seq == 1 else 'staged_channels'}"
                f" VALUES ({', '.join('?' * (len(key) + 4))})",
                (*key, name, channel.unit, channel.dtype, channel.data),
            )
    conn.commit()
    conn.close()


def test_a_store_of_schema_5_keeps_its_merged_and_staged_telemetry_through_migration_6(
    tmp_path: Path,
) -> None:
    """Migration 6 keeps merged telemetry in arrival order: a store upgraded from 5 still holds its
    earlier merged batches in the device-keyed tables, and its staged ones become the log's."""
    _schema_5_store(tmp_path / "old.db")
    store = open_store(f"sqlite:///{tmp_path / 'old.db'}")  # migrates, then merges batch 2 at open
    try:
        assert applied_versions(store) == list(range(1, LATEST + 1))
        assert store.record_seqs("orin-1", STREAM) == [1, 2]
        series = store.latest_telemetry("orin-1", "nvml", "power_w", 3600.0)
        assert series is not None and series.values.tolist() == [7.0, 8.0, 9.0, 10.0]
        wall = 1_800_000_000 * NS  # the History reads both batches from raw: summaries begin after them
        history = store.telemetry_history(
            "orin-1", "nvml", "power_w", wall - 3600 * NS, wall + 3600 * NS, 500
        )
        assert [(b.n, b.mean) for b in history.buckets] == [(4, 8.5)]
        assert store.telemetry_channels("orin-1") == [("nvml", "power_w", "W"), ("nvml", "temp_gpu_c", "C")]
        assert _write(store, _batch(2, 0, [0.0], [1.0])).duplicates == 1
        with store._transaction() as cur:
            cur.execute("SELECT COUNT(*) FROM telemetry_index")
            assert cur.fetchone() == (1,)  # batch 2, merged at open; batch 1 stays where 5 merged it
        pruned = apply_retention(store, RetentionPolicy(raw_days=1), now_ns=1_800_000_000 * NS + 3 * DAY_NS)
        assert (pruned.batches_pruned, pruned.samples_rolled_up) == (2, 8)
        assert store.latest_telemetry("orin-1", "nvml", "power_w", 3600.0) is None
    finally:
        store.close()
