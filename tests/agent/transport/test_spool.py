"""The agent's spool: seq and stream survive restarts, bounds drop only telemetry/logs, thread safety."""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from ctxscope.agent.transport.spool import RecordTooLarge, Spool, SpoolFull
from ctxscope.shared.codec import decode
from ctxscope.shared.messages import CommandAck, Log, PointResult, Status, TelemetryBatch, TelemetryChannel
from tests.support import result_fields

DEV = "jetson-1"


def telemetry_fields(n: int = 50) -> dict[str, object]:
    t = np.arange(n, dtype="<i8")
    power = np.ones(n, dtype="<f4")
    return {
        "source": "jtop",
        "mono_to_wall_ns": 0,
        "t_ns": t.tobytes(),
        "channels": {"vdd_in_w": TelemetryChannel(unit="W", dtype="f4", data=power.tobytes())},
    }


def test_stream_and_seq_survive_restart(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.sqlite", DEV)
    stream = spool.stream
    assert [spool.emit(Log, level="info", message=f"m{i}").seq for i in range(3)] == [1, 2, 3]
    spool.ack(1)
    spool.ack(2)
    spool.ack(3)
    spool.close()
    reopened = Spool(tmp_path / "spool.sqlite", DEV)
    assert reopened.stream == stream
    assert reopened.backlog() == 0
    assert reopened.high_water_seq() == 3
    assert reopened.emit(PointResult, **result_fields(0)).seq == 4
    assert [reopened.next_birth(), reopened.next_birth()] == [1, 2]
    reopened.close()
    assert Spool(tmp_path / "spool.sqlite", DEV).next_birth() == 3
    with pytest.raises(ValueError, match="belongs to device"):
        Spool(tmp_path / "spool.sqlite", "other-device")


def test_stored_payload_decodes_to_the_emitted_record(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.sqlite", DEV)
    emitted = spool.emit(PointResult, **result_fields(7))
    (record,) = spool.oldest(10)
    assert record.topic == f"ctxscope/v1/{DEV}/result"
    assert decode(record.payload) == emitted
    assert spool.oldest(10, after_seq=record.seq) == []


def test_state_messages_are_not_spooled(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.sqlite", DEV)
    spool.emit(Log, level="info", message="x")
    status = spool.state_message(Status, state="online", birth=1)
    assert (status.seq, status.stream) == (1, spool.stream)
    assert spool.backlog() == 1
    with pytest.raises(ValueError, match="state"):
        spool.emit(Status, state="online", birth=1)


def test_full_spool_drops_oldest_telemetry_never_results(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.sqlite", DEV, max_rows=100, max_bytes=10**9)
    for i in range(60):
        spool.emit(TelemetryBatch, **telemetry_fields())
        spool.emit(PointResult, **result_fields(i))
    kinds = [r.kind for r in spool.oldest(1000)]
    assert kinds.count("result") == 60
    assert kinds.count("telemetry") == 40
    stats = spool.stats()
    assert (stats.backlog, stats.dropped, stats.over_bound) == (100, 20, False)
    # the telemetry that survived is the newest
    telemetry_seqs = [r.seq for r in spool.oldest(1000) if r.kind == "telemetry"]
    assert telemetry_seqs == list(range(41, 121, 2))


def test_spool_full_of_results_keeps_them_and_reports_back_pressure(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.sqlite", DEV, max_rows=100, max_bytes=10**9)
    for i in range(120):
        spool.emit(PointResult, **result_fields(i))
    spool.emit(Log, level="info", message="dropped: nothing older is droppable")
    stats = spool.stats()
    assert (stats.backlog, stats.dropped, stats.over_bound) == (120, 1, True)
    assert stats.high_water_seq == 121


def test_byte_bound(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.sqlite", DEV, max_rows=10**6, max_bytes=2 * 1024 * 1024)
    for _ in range(200):
        spool.emit(TelemetryBatch, **telemetry_fields(2000))  # ~24 KiB each
    stats = spool.stats()
    assert stats.backlog_bytes <= 2 * 1024 * 1024
    assert stats.dropped > 0 and stats.backlog + stats.dropped == 200


def test_concurrent_emit_and_ack(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.sqlite", DEV)
    per_thread = 200

    def produce() -> None:
        for i in range(per_thread):
            spool.emit(Log, level="debug", message=str(i))

    producers = [threading.Thread(target=produce) for _ in range(3)]
    acked: list[int] = []
    stop = threading.Event()

    def forward() -> None:
        while not stop.is_set() or spool.backlog():
            for record in spool.oldest(20):
                spool.ack(record.seq)
                acked.append(record.seq)

    forwarder = threading.Thread(target=forward)
    forwarder.start()
    for p in producers:
        p.start()
    for p in producers:
        p.join()
    stop.set()
    forwarder.join()
    assert sorted(acked) == list(range(1, 3 * per_thread + 1))
    assert spool.backlog() == 0


def test_acknowledged_records_leave_the_backlog_and_can_be_replayed(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.sqlite", DEV, keep_acked_s=60)
    for i in range(5):
        spool.emit(PointResult, **result_fields(i))
    before = time.time_ns()
    for seq in (1, 2, 3):
        spool.ack(seq)
    assert spool.backlog() == 2
    assert [r.seq for r in spool.oldest(10)] == [4, 5]
    spool.ack(3)  # a second PUBACK of the same record changes nothing
    assert spool.backlog() == 2
    assert spool.replay_since(time.time_ns() + 1) == 0
    assert spool.replay_since(before) == 3
    assert [r.seq for r in spool.oldest(10)] == [1, 2, 3, 4, 5]
    assert spool.stats().backlog == 5


def test_acknowledged_records_are_deleted_after_the_replay_window(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite"
    spool = Spool(path, DEV, keep_acked_s=0)
    for i in range(3):
        spool.emit(PointResult, **result_fields(i))
    spool.ack(1)
    spool.ack(2)  # within a second of the first prune: kept until the next one
    time.sleep(1.05)
    spool.ack(3)
    spool.close()
    with sqlite3.connect(path) as db:
        # 1 and 2 went with the prune at the third PUBACK; 3 waits for the next one.
        assert db.execute("SELECT seq FROM outbox").fetchall() == [(3,)]


def test_a_spool_from_before_the_replay_window_is_upgraded(tmp_path: Path) -> None:
    """A spool file of an older agent (no acked_ns column) opens with its pending records intact."""
    path = tmp_path / "spool.sqlite"
    spool = Spool(path, DEV)
    for i in range(2):
        spool.emit(PointResult, **result_fields(i))
    spool.close()
    with sqlite3.connect(path) as db:
        db.execute("DROP INDEX outbox_pending")
        db.execute("ALTER TABLE outbox DROP COLUMN acked_ns")
    reopened = Spool(path, DEV)
    assert reopened.backlog() == 2
    reopened.ack(1)
    assert [r.seq for r in reopened.oldest(10)] == [2]


def test_an_invalid_record_consumes_no_seq(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.sqlite", DEV, max_rows=100, max_bytes=10**9)
    for _ in range(100):
        spool.emit(Log, level="info", message="fills the spool")
    with pytest.raises(ValidationError):
        spool.emit(PointResult, **{**result_fields(0), "context_len": 0})
    stats = spool.stats()
    assert (stats.backlog, stats.dropped, stats.high_water_seq) == (100, 0, 100)
    assert spool.emit(PointResult, **result_fields(0)).seq == 101


def test_a_record_over_the_message_limit_is_refused(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.sqlite", DEV)
    spool.emit(Log, level="info", message="x")
    with pytest.raises(RecordTooLarge, match="exceeds"):
        spool.emit(TelemetryBatch, **telemetry_fields(1_100_000))  # 8.8 MB of timestamps + values
    assert (spool.backlog(), spool.high_water_seq()) == (1, 1)


def test_refusal_acks_are_dropped_like_telemetry_accepted_ones_never(tmp_path: Path) -> None:
    """A sender flooding refused commands must not grow the spool past its bound: a refusal's ack is
    droppable (the command did not run); an accepted command's is kept like a result."""
    spool = Spool(tmp_path / "spool.sqlite", DEV, max_rows=50, max_bytes=10**9)
    spool.emit(CommandAck, command_id="cmd-ok", name="run_plan", accepted=True, run_id="run-1")
    for i in range(200):
        spool.emit(CommandAck, command_id=f"cmd-{i}", name="run_plan", accepted=False, reason="expired")
    stats = spool.stats()
    assert (stats.backlog, stats.dropped, stats.over_bound) == (50, 151, False)
    kept = [decode(r.payload) for r in spool.oldest(1000)]
    assert isinstance(kept[0], CommandAck) and kept[0].accepted
    assert [a.command_id for a in kept[1:]] == [f"cmd-{i}" for i in range(151, 200)]


@pytest.mark.parametrize("damage", ["random bytes", "torn page"])
def test_a_spool_that_cannot_be_read_is_moved_aside_and_a_new_stream_starts(
    tmp_path: Path, damage: str
) -> None:
    """A damaged spool once made `agent serve` exit at every start, for good (a restart loop)."""
    path = tmp_path / "spool.sqlite"
    if damage == "random bytes":
        path.write_bytes(bytes(range(256)) * 64)
    else:
        old = Spool(path, DEV)
        for i in range(50):
            old.emit(PointResult, **result_fields(i))
        old_stream = old.stream
        old._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        old._db.close()
        data = bytearray(path.read_bytes())
        data[4096 : 4096 * 3] = bytes(8192)  # pages of the tables zeroed
        path.write_bytes(bytes(data))
    spool = Spool(path, DEV)
    assert spool.set_aside is not None and spool.set_aside.exists()
    assert spool.set_aside.name.startswith("spool.sqlite.damaged-")
    if damage == "torn page":
        assert spool.stream != old_stream
    (record,) = spool.oldest(10)
    notice = decode(record.payload)
    assert isinstance(notice, Log) and notice.level == "error" and "moved aside" in notice.message
    assert record.seq == 1


def test_a_locked_spool_is_not_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite"
    Spool(path, DEV)._db.close()
    with sqlite3.connect(path) as holder:
        holder.execute("PRAGMA locking_mode=EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
        with pytest.raises(sqlite3.OperationalError):
            Spool(path, DEV)
        holder.rollback()
    assert [p.name for p in tmp_path.iterdir() if "damaged" in p.name] == []


def test_rows_acknowledged_while_the_clock_was_ahead_are_pruned_and_not_replayed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A board whose clock ran a day ahead (no RTC, a bad NTP answer) and was then corrected once kept
    those acknowledged rows for a day and replayed them all at its next reconnect."""
    path = tmp_path / "spool.sqlite"
    spool = Spool(path, DEV, keep_acked_s=0)
    for i in range(4):
        spool.emit(PointResult, **result_fields(i))
    real = time.time_ns
    ahead = real() + 86_400 * 10**9
    monkeypatch.setattr(time, "time_ns", lambda: ahead)
    spool.ack(1)
    spool.ack(2)
    monkeypatch.setattr(time, "time_ns", real)  # the clock is corrected
    assert spool.replay_since(real() - 60 * 10**9) == 0
    spool._pruned_ns = 0  # the next acknowledgement prunes
    spool.ack(3)
    spool.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT seq FROM outbox ORDER BY seq").fetchall() == [(3,), (4,)]


def test_a_full_disk_gives_a_result_the_room_of_the_oldest_telemetry(tmp_path: Path) -> None:
    """The spool's own bound is far away, but the file cannot grow (a full disk, here SQLite's page
    limit): telemetry goes on in the room of the oldest telemetry (counted as dropped; it once raised
    at every batch, uncounted), and a result takes that room too."""
    path = tmp_path / "spool.sqlite"
    spool = Spool(path, DEV)
    spool._db.execute("PRAGMA max_page_count = 64")
    for _ in range(400):
        spool.emit(TelemetryBatch, **telemetry_fields(200))
    kept = [r.seq for r in spool.oldest(10_000)]
    assert spool.stats().dropped == 400 - len(kept) > 0
    assert kept[-1] == 400, "the newest telemetry is kept, the oldest dropped"
    for i in range(40):
        spool.emit(PointResult, **result_fields(i))  # room made from the oldest telemetry
    kinds = [r.kind for r in spool.oldest(10_000)]
    assert kinds.count("result") == 40
    assert spool.stats().dropped == 400 - kinds.count("telemetry")


def test_a_full_disk_without_droppable_room_refuses_a_result_and_counts_lost_telemetry(
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path / "spool.sqlite", DEV)
    spool._db.execute("PRAGMA max_page_count = 64")
    results = 0
    with pytest.raises(sqlite3.OperationalError, match="full"):
        while True:  # results only: nothing the spool may drop
            spool.emit(PointResult, **result_fields(results))
            results += 1
    assert results > 10
    for expected_drops in (1, 2):
        with pytest.raises(SpoolFull, match="telemetry record was dropped"):
            spool.emit(TelemetryBatch, **telemetry_fields(200))
        assert spool.stats().dropped == expected_drops
    assert [r.kind for r in spool.oldest(10_000)] == ["result"] * results


@pytest.mark.parametrize("loss", ["file deleted", "folder removed", "file replaced"])
def test_a_spool_file_lost_under_the_running_agent_is_written_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loss: str
) -> None:
    """A cleaner that deletes the spool under a running agent once took every unsent record with the
    next restart: the agent wrote on to a file no longer in any folder."""
    monkeypatch.setattr("ctxscope.agent.transport.spool.FILE_CHECK_EVERY_S", 0.0)
    path = tmp_path / "spool" / "spool.sqlite"
    spool = Spool(path, DEV)
    stream = spool.stream
    for i in range(20):
        spool.emit(PointResult, **result_fields(i))
    spool.ack(1)  # acknowledged, kept for replay: it must come back too
    if loss == "folder removed":
        shutil.rmtree(path.parent)
    else:
        path.unlink()
        if loss == "file replaced":
            path.write_bytes(b"someone else's file")
    spool.emit(PointResult, **result_fields(20))  # the write that notices
    spool.close()

    reopened = Spool(path, DEV)
    assert reopened.set_aside is None and reopened.stream == stream
    records = [decode(r.payload) for r in reopened.oldest(100)]
    results = [r.seq for r in records if isinstance(r, PointResult)]
    notices = [r for r in records if isinstance(r, Log)]
    assert results == [*range(2, 21), 22]  # seq 21 is the notice, stored before the new result
    assert len(notices) == 1 and notices[0].level == "error" and "written back" in notices[0].message
    assert reopened.replay_since(0) == 1  # the acknowledged one
    foreign = [p for p in path.parent.iterdir() if ".foreign-" in p.name]
    if loss == "file replaced":
        assert len(foreign) == 1 and foreign[0].read_bytes() == b"someone else's file"
        assert "moved to spool.sqlite.foreign-" in notices[0].message
    else:
        assert foreign == []


def test_a_written_back_spool_that_cannot_be_opened_again_is_opened_at_a_later_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file was written back but opening it failed (here: twice). The spool once stayed closed
    until a restart, refusing every record; now each write tries again, and once it opens, the records
    from before and after are there with a notice of what happened."""
    monkeypatch.setattr("ctxscope.agent.transport.spool.FILE_CHECK_EVERY_S", 0.0)
    path = tmp_path / "spool.sqlite"
    spool = Spool(path, DEV)
    for i in range(5):
        spool.emit(PointResult, **result_fields(i))
    path.unlink()
    opened = spool._open
    failures = iter([sqlite3.OperationalError("disk I/O error"), sqlite3.OperationalError("disk I/O error")])

    def flaky_open() -> str:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return opened()

    monkeypatch.setattr(spool, "_open", flaky_open)
    with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
        spool.emit(PointResult, **result_fields(5))  # notices the loss: written back, not reopened
    with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
        spool.emit(PointResult, **result_fields(6))  # opening it fails again
    stored = spool.emit(PointResult, **result_fields(7))  # opened: stored
    spool.close()

    reopened = Spool(path, DEV)
    records = [decode(r.payload) for r in reopened.oldest(100)]
    assert [r.seq for r in records if isinstance(r, PointResult)] == [1, 2, 3, 4, 5, stored.seq]
    notices = [r for r in records if isinstance(r, Log)]
    assert len(notices) == 1 and "written back" in notices[0].message
    assert "opening it again failed at first" in notices[0].message


def test_a_spool_whose_file_stays_checks_it_without_a_notice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("ctxscope.agent.transport.spool.FILE_CHECK_EVERY_S", 0.0)
    spool = Spool(tmp_path / "spool.sqlite", DEV)
    for i in range(5):
        spool.emit(PointResult, **result_fields(i))
    assert [r.seq for r in spool.oldest(10)] == [1, 2, 3, 4, 5]
    assert not any(isinstance(decode(r.payload), Log) for r in spool.oldest(10))


def test_a_file_that_cannot_be_checked_does_not_stop_the_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Its folder's permissions changed: the check cannot tell, and the open database takes the record."""
    monkeypatch.setattr("ctxscope.agent.transport.spool.FILE_CHECK_EVERY_S", 0.0)
    spool = Spool(tmp_path / "spool.sqlite", DEV)

    def denied(path: Path) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr("ctxscope.agent.transport.spool.file_identity", denied)
    assert spool.emit(PointResult, **result_fields(0)).seq == 1
    assert spool.backlog() == 1 and "cannot check its file" in caplog.text
