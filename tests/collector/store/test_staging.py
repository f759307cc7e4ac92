"""Staging (the SQLite store writes telemetry and results in arrival order and merges them later):
exactly once across staged and merged records, across writers and a killed collector; every reader
sees a staged record as it sees a merged one (on both backends: PostgreSQL stages nothing); the merge
keeps the devices' newest values; retention reaches staged telemetry."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ctxscope.collector.store import Accepted, Store, open_store
from ctxscope.collector.store.retention import RetentionPolicy, apply_retention
from ctxscope.collector.store.rollups import rollups
from ctxscope.collector.store.sqlite import SQLiteStore
from ctxscope.shared.messages import CHANNEL_OF_KIND, Message, TelemetryBatch, TelemetryChannel
from ctxscope.shared.topics import topic_for
from tests.support import point_result

DEV = "orin-1"
STREAM = "0123456789abcdef"
NS = 1_000_000_000
WALL0 = 1_800_000_000 * NS


def accepted(message: Message) -> Accepted:
    return Accepted(topic_for(message.device, CHANNEL_OF_KIND[message.kind]), message)


def batch(seq: int, device: str = DEV, wall_ns: int = WALL0, power: float = 100.0) -> TelemetryBatch:
    """Two samples one second apart, the second at `wall_ns` + seq seconds."""
    mono0 = 10**12
    t = np.asarray([mono0 + (seq - 1) * NS, mono0 + seq * NS], dtype="<i8")
    values = np.asarray([power - 1, power + seq], dtype="<f4")
    return TelemetryBatch(
        device=device,
        stream=STREAM,
        seq=seq,
        ts=seq,
        source="nvml",
        mono_to_wall_ns=wall_ns - mono0,
        t_ns=t.tobytes(),
        channels={"power_w": TelemetryChannel(unit="W", dtype="f4", data=values.tobytes())},
    )


def staged_rows(path: Path) -> int:
    """Records staged and not merged yet (merged telemetry stays in the log, indexed)."""
    with sqlite3.connect(path) as db:
        return sum(
            db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
            for t in ("telemetry_log_unmerged", "staged_results")
        )


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SQLiteStore]:
    """A SQLite store whose merge runs only when a test asks for it."""
    opened = SQLiteStore(tmp_path / "store.db", merge_interval_s=3600)
    yield opened
    opened.close()


def test_a_record_is_stored_once_whether_its_original_is_staged_or_merged(sqlite_store: SQLiteStore) -> None:
    first = sqlite_store.write_batch([accepted(batch(s)) for s in (1, 2, 3)])
    assert (first.stored, first.duplicates) == (3, 0)
    assert staged_rows(sqlite_store.path) == 3  # staged, not yet in the device-keyed tables
    while_staged = sqlite_store.write_batch([accepted(batch(s)) for s in (2, 3, 4)])
    assert (while_staged.stored, while_staged.duplicates) == (1, 2)
    assert sqlite_store.merge_staged() == 4
    assert staged_rows(sqlite_store.path) == 0
    after_merge = sqlite_store.write_batch(
        [accepted(m) for m in (batch(4), batch(5), point_result(DEV, STREAM, 4))]
    )
    assert (after_merge.stored, after_merge.duplicates) == (1, 2)  # seq 4 twice: a batch, then a result
    assert sqlite_store.record_seqs(DEV, STREAM) == [1, 2, 3, 4, 5]
    sqlite_store.merge_staged()
    assert sqlite_store.record_seqs(DEV, STREAM) == [1, 2, 3, 4, 5]
    assert sqlite_store.record_count() == 5


def test_a_second_writer_sees_what_the_first_staged(tmp_path: Path) -> None:
    """Two stores on one file (a collector and an import): each write transaction reads what the other
    staged or merged since, so neither stores a key twice."""
    one = SQLiteStore(tmp_path / "store.db", merge_interval_s=3600)
    two = SQLiteStore(tmp_path / "store.db", merge_interval_s=3600)
    try:
        assert one.write_batch([accepted(batch(s)) for s in (1, 2, 3)]).stored == 3
        assert two.write_batch([accepted(batch(s)) for s in (2, 3, 4)]).stored == 1
        assert one.write_batch([accepted(batch(s)) for s in (4, 5)]).stored == 1
        assert two.merge_staged() == 5
        assert one.write_batch([accepted(batch(s)) for s in (5, 6)]).stored == 1
        assert one.merge_staged() == 1
        assert one.record_seqs(DEV, STREAM) == two.record_seqs(DEV, STREAM) == [1, 2, 3, 4, 5, 6]
    finally:
        one.close()
        two.close()


KILLED_WRITER = """
import os, signal, sys
from ctxscope.collector.store.sqlite import SQLiteStore
from tests.collector.store.test_staging import accepted, batch
store = SQLiteStore(__import__("pathlib").Path(sys.argv[1]), merge_interval_s=3600)
store.write_batch([accepted(batch(s)) for s in (1, 2, 3)])
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_staged_records_survive_a_killed_collector_and_are_merged_at_the_next_open(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    killed = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(path)], check=False)
    assert killed.returncode == -9
    assert staged_rows(path) == 3  # committed before the kill, never merged
    reopened = SQLiteStore(path, merge_interval_s=3600)
    try:
        assert staged_rows(path) == 0  # merged at open
        again = reopened.write_batch([accepted(batch(s)) for s in (2, 3, 4)])  # the broker redelivers
        assert (again.stored, again.duplicates) == (1, 2)
        assert reopened.record_seqs(DEV, STREAM) == [1, 2, 3, 4]
        series = reopened.latest_telemetry(DEV, "nvml", "power_w", 3600.0)
        assert series is not None and len(series.values) == 8
    finally:
        reopened.close()


def test_a_restart_with_an_unmerged_staging_table_still_counts_duplicates(tmp_path: Path) -> None:
    """A store that opens beside a writer's staged rows (its merge at open moved them) and one that
    opens first and gets them later both know those keys."""
    path = tmp_path / "store.db"
    writer = SQLiteStore(path, merge_interval_s=3600)
    writer.write_batch([accepted(batch(s)) for s in (1, 2)])
    later = SQLiteStore(path, merge_interval_s=3600)
    try:
        writer.write_batch([accepted(batch(3))])
        assert staged_rows(path) == 1
        assert later.write_batch([accepted(batch(s)) for s in (1, 2, 3)]).duplicates == 3
    finally:
        writer.close()
        later.close()


def _readers(store: Store) -> dict[str, Any]:
    """What every reader of records, results and telemetry answers for the device."""
    series = store.latest_telemetry(DEV, "nvml", "power_w", 3600.0)
    (device,) = store.devices([DEV])
    return {
        "record_count": store.record_count(DEV),
        "seqs": store.record_seqs(DEV, STREAM),
        "streams": [(s["stream"], s["records"], s["first_seq"], s["last_seq"]) for s in store.streams(DEV)],
        "gaps": store.gaps(DEV),
        "results": [(r["seq"], r["point_id"], r["metrics"]["ttft"]["samples"]) for r in store.results(DEV)],
        "channels": store.telemetry_channels(DEV),
        "series": None if series is None else (series.wall_ns.tolist(), series.values.tolist()),
        "live": device["live"],
        "last_seen_ns": device["last_seen_ns"],
    }


def test_readers_see_staged_records_as_they_see_merged_ones(store: Store) -> None:
    records = [batch(s, power=100.0 + s) for s in (1, 2, 3, 5)] + [point_result(DEV, STREAM, 7)]
    store.write_batch([accepted(m) for m in records])
    before = _readers(store)
    assert before["seqs"] == [1, 2, 3, 5, 7]
    assert [(g.first, g.last) for g in before["gaps"]] == [(4, 4), (6, 6)]
    assert before["channels"] == [("nvml", "power_w", "W")]
    assert len(before["series"][1]) == 8 and max(before["series"][1]) == 110.0
    newest = before["live"]["nvml"]
    assert (newest["wall_ns"], newest["channels"]["power_w"]["value"]) == (WALL0 + 5 * NS, 110.0)
    assert len(before["results"]) == 1
    store.merge_staged()
    assert _readers(store) == before
    reopened = open_store(store_url_of(store), read_only=True)
    try:
        assert _readers(reopened) == before
    finally:
        reopened.close()


def store_url_of(store: Store) -> str:
    if isinstance(store, SQLiteStore):
        return f"sqlite:///{store.path}"
    return str(store._url)  # type: ignore[attr-defined]


def test_a_reader_open_before_the_merge_keeps_newest_values_and_last_seen(sqlite_store: SQLiteStore) -> None:
    """The fleet view's process reads staged rows incrementally: values it folded in before a merge
    stay, and what the merge moves shows in the device rows."""
    reader = open_store(f"sqlite:///{sqlite_store.path}", read_only=True)
    try:
        sqlite_store.write_batch([accepted(batch(1, power=10.0))])
        (first,) = reader.devices()
        assert first["live"]["nvml"]["channels"]["power_w"]["value"] == 11.0
        sqlite_store.write_batch([accepted(batch(2, power=10.0))])
        sqlite_store.merge_staged()  # seq 2 is merged before the reader ever read it staged
        (merged,) = reader.devices()
        assert merged["live"]["nvml"]["channels"]["power_w"]["value"] == 12.0
        assert merged["last_seen_ns"] >= first["last_seen_ns"]
        sqlite_store.write_batch([accepted(batch(3, wall_ns=WALL0 - 100 * NS, power=0.0))])  # an older sample
        (older,) = reader.devices()
        assert older["live"]["nvml"]["channels"]["power_w"]["value"] == 12.0
        sqlite_store.merge_staged()
        (row,) = sqlite_store.devices()
        assert row["live"] == older["live"]
    finally:
        reader.close()


def test_the_merge_indexes_telemetry_where_it_is_and_moves_results(sqlite_store: SQLiteStore) -> None:
    """A merge writes each record's key, each telemetry batch's index entry and each result once; the
    batches stay in the log, unmerged no more."""
    devices = [f"dev-{i}" for i in range(3)]
    sqlite_store.write_batch([accepted(batch(s, device=d)) for s in (1, 2) for d in devices])
    sqlite_store.write_batch([accepted(point_result(d, STREAM, 3)) for d in devices])
    assert sqlite_store.merge_staged() == 9
    assert sqlite_store.merge_staged() == 0
    with sqlite3.connect(sqlite_store.path) as db:
        counts = {t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in (
            "records", "telemetry_index", "telemetry_log", "telemetry_log_channels", "telemetry_log_unmerged",
            "results", "staged_results", "telemetry", "telemetry_channels")}  # fmt: skip
        assert counts == {
            "records": 9,
            "telemetry_index": 6,
            "telemetry_log": 6,
            "telemetry_log_channels": 6,
            "telemetry_log_unmerged": 0,
            "results": 3,
            "staged_results": 0,
            "telemetry": 0,
            "telemetry_channels": 0,
        }
        indexed = db.execute(
            "SELECT i.device, i.source, i.wall_end_ns = s.wall_end_ns FROM telemetry_index i"
            " JOIN telemetry_log s ON s.id = i.id AND s.device = i.device ORDER BY i.device"
        ).fetchall()
        assert indexed == [(d, "nvml", 1) for d in devices for _ in (1, 2)]
        received = db.execute("SELECT DISTINCT received_ns FROM records").fetchall()
        seen = db.execute("SELECT last_seen_ns FROM devices").fetchall()
    assert len(received) == 2 and seen == [(max(r for (r,) in received),)] * 3  # the newest arrival


def test_retention_reaches_staged_telemetry(store: Store) -> None:
    old, recent = WALL0 - 10 * 86400 * NS, WALL0
    store.write_batch([accepted(batch(1, wall_ns=old)), accepted(batch(2, wall_ns=recent))])
    outcome = apply_retention(store, RetentionPolicy(raw_days=7, rollup_s=60), now_ns=WALL0 + NS)
    assert (outcome.batches_pruned, outcome.samples_rolled_up) == (1, 2)
    assert [r["n"] for r in rollups(store, DEV, "power_w")] == [2]
    series = store.latest_telemetry(DEV, "nvml", "power_w", 30 * 86400.0)
    assert series is not None and series.values.tolist() == [99.0, 102.0]
    assert store.write_batch([accepted(batch(1, wall_ns=old))]).duplicates == 1  # its key stays


def test_retention_prunes_every_device_and_source_of_the_merged_log(sqlite_store: SQLiteStore) -> None:
    """Retention finds old merged batches through the log's per-device index, one (device, source) at a
    time: each of two devices' two sources loses its old batch and keeps its recent one."""
    old, recent = WALL0 - 10 * 86400 * NS, WALL0
    sources = ("jtop", "nvml")
    sent = [
        batch(seq, device=d, wall_ns=wall).model_copy(update={"source": source})
        for d in ("dev-a", "dev-b")
        for source in sources
        for seq, wall in ((sources.index(source) * 2 + 1, old), (sources.index(source) * 2 + 2, recent))
    ]
    assert sqlite_store.write_batch([accepted(b) for b in sent]).stored == 8
    outcome = apply_retention(sqlite_store, RetentionPolicy(raw_days=7, rollup_s=60), now_ns=WALL0 + NS)
    assert outcome.batches_pruned == 4
    for d in ("dev-a", "dev-b"):
        for source in sources:
            assert [r["source"] for r in rollups(sqlite_store, d, "power_w")].count(source) == 1
            kept = sqlite_store.latest_telemetry(d, source, "power_w", 30 * 86400.0)
            assert kept is not None and len(kept.values) == 2  # the recent batch's two samples
    with sqlite3.connect(sqlite_store.path) as db:
        left = [
            db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
            for t in ("telemetry_log", "telemetry_index")
        ]
    assert left == [4, 4]


def test_a_merge_moves_device_ranges_and_readers_see_each_record_once_meanwhile(tmp_path: Path) -> None:
    """A merge commits one device range at a time; one stopped between two (a kill) is carried on by
    the next, and records staged while it ran stay staged for the next merge."""
    path = tmp_path / "store.db"
    store = SQLiteStore(path, merge_interval_s=3600)
    devices = ["dev-a", "dev-b", "dev-c"]
    store.write_batch([accepted(batch(s, device=d)) for s in (1, 2) for d in devices])
    with store._transaction() as cur:
        store.stager.keys.sync(cur)
        plan = store.stager.plan(cur)
    assert plan is not None and plan[1] == devices
    with store._transaction() as cur:
        assert store.stager.merge_range(cur, plan[0], "dev-a", "dev-a") == 2
    store.write_batch([accepted(batch(3, device=d)) for d in devices])  # ingest goes on meanwhile
    assert [store.record_seqs(d, STREAM) for d in devices] == [[1, 2, 3]] * 3
    assert store.record_count() == 9
    assert store.write_batch([accepted(batch(s, device="dev-a")) for s in (1, 3)]).duplicates == 2
    store.close()  # the merge stops here, as if killed
    reopened = SQLiteStore(path, merge_interval_s=3600)  # carries it on, then merges seq 3
    try:
        assert staged_rows(path) == 0
        assert [reopened.record_seqs(d, STREAM) for d in devices] == [[1, 2, 3]] * 3
        with sqlite3.connect(path) as db:
            assert db.execute("SELECT COUNT(*) FROM telemetry_index").fetchone() == (9,)
            assert db.execute("SELECT merging, merged_to FROM staging_merged").fetchone() == (None, None)
    finally:
        reopened.close()


@pytest.mark.parametrize("source", ['x"y', "tégra", "a.b[0]"])
def test_a_source_of_any_name_merges_and_the_store_reopens(tmp_path: Path, source: str) -> None:
    """A telemetry source's name is any string of the contract; one with a quote or a non-ASCII
    character once made every merge fail, and then the store's own open (which merges)."""
    path = tmp_path / "store.db"
    store = SQLiteStore(path, merge_interval_s=3600)
    try:
        odd = batch(1).model_copy(update={"source": source})
        assert store.write_batch([accepted(odd), accepted(batch(2))]).stored == 2
        assert store.merge_staged() == 2
        (row,) = store.devices()
        assert set(row["live"]) == {source, "nvml"}
        assert row["live"][source]["channels"]["power_w"]["value"] == 101.0
        store.write_batch([accepted(batch(3).model_copy(update={"source": source}))])
    finally:
        store.close()
    reopened = SQLiteStore(path, merge_interval_s=3600)  # merges what was left staged
    try:
        assert staged_rows(path) == 0
        (row,) = reopened.devices()
        assert row["live"][source]["channels"]["power_w"]["value"] == 103.0
    finally:
        reopened.close()


def test_a_merge_that_fails_at_open_leaves_the_store_open_and_its_records_readable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A fault of the merge itself (not of the database) must not keep the collector from starting:
    the staged records are committed and readable, and the merge thread tries again."""
    path = tmp_path / "store.db"
    store = SQLiteStore(path, merge_interval_s=3600)
    store.write_batch([accepted(batch(s)) for s in (1, 2)])
    store.close()

    def broken(*args: Any) -> int:
        raise TypeError("a fault of the merge")

    with monkeypatch.context() as patched:
        patched.setattr("ctxscope.collector.store.staging.Staging.merge_range", broken)
        reopened = SQLiteStore(path, merge_interval_s=3600)
    try:
        assert "failed at open (TypeError: a fault of the merge)" in caplog.text
        assert [(f.task, f.error) for f in reopened.upkeep.faults()] == [
            ("merge", "TypeError: a fault of the merge")
        ]
        assert staged_rows(path) == 2 and reopened.record_seqs(DEV, STREAM) == [1, 2]
        assert reopened.write_batch([accepted(batch(3))]).stored == 1
        assert reopened.merge_staged() == 3  # the merge the open left, carried on, and the new record
        assert reopened.upkeep.faults() == []
        assert staged_rows(path) == 0 and reopened.record_seqs(DEV, STREAM) == [1, 2, 3]
    finally:
        reopened.close()
