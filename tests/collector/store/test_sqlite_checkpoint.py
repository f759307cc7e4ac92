"""The SQLite store's checkpoint thread: it copies committed batches into the database file, and a
checkpoint that fails is logged and tried again, never the end of the thread."""

from __future__ import annotations

import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from ctxscope.collector.store import sqlite as sqlite_store
from ctxscope.collector.store.sqlite import SQLiteStore
from tests.collector.store.test_store import DEV, STREAM, accepted
from tests.support import point_result


class FailsOnce:
    """A connection whose first statement raises, as a disk error would."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.calls = 0

    def execute(self, statement: str) -> Any:
        self.calls += 1
        if self.calls == 1:
            raise sqlite3.OperationalError("disk I/O error (injected)")
        return self.conn.execute(statement)

    def close(self) -> None:
        self.conn.close()


def test_the_checkpoint_thread_copies_batches_into_the_database_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sqlite_store, "CHECKPOINT_INTERVAL_S", 0.05)
    store = SQLiteStore(tmp_path / "store.db")
    failing = FailsOnce(store._checkpoint_conn)
    store._checkpoint_conn = failing  # type: ignore[assignment]
    try:
        store.write_batch([accepted(point_result(DEV, STREAM, s)) for s in (1, 2, 3)])
        deadline = time.monotonic() + 10
        while failing.calls < 3:  # the failed one, then at least two after the batch was committed
            assert time.monotonic() < deadline, "the checkpoint thread stopped checkpointing"
            time.sleep(0.05)
        assert store._checkpointer.is_alive()
        assert "injected" in caplog.text
        # The database file alone, without its WAL, holds the batch: it was checkpointed.
        shutil.copy(tmp_path / "store.db", tmp_path / "copy.db")
        with sqlite3.connect(tmp_path / "copy.db") as copy:
            assert copy.execute("SELECT COUNT(*) FROM all_records").fetchone() == (3,)
    finally:
        store.close()
    assert not store._checkpointer.is_alive()


def test_the_writer_deletes_without_rewriting_the_pages_it_frees(tmp_path: Path) -> None:
    """secure_delete=FAST on the writer: a delete that frees pages (the merge's removal of staged rows,
    retention) does not write them again, where a build with secure_delete on (Debian's) would put
    every one of them into the WAL and the checkpoint would write it once more."""
    store = SQLiteStore(tmp_path / "store.db")
    try:
        conn = store._writer()
        conn.execute("CREATE TABLE scratch (id INTEGER PRIMARY KEY, data BLOB)")
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO scratch VALUES (?, ?)", ((i, bytes(450)) for i in range(5000)))
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        wal = Path(f"{tmp_path / 'store.db'}-wal")
        before = wal.stat().st_size
        conn.execute("DELETE FROM scratch")
        assert wal.stat().st_size - before < 0.05 * 5000 * 450  # with secure_delete on: ~1.1x the rows
    finally:
        store.close()
