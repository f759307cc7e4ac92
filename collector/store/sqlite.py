"""SQLite store (WAL): one writer connection owned by the ingest thread, one reader for views."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ctxscope.collector.store.base import Store, StoreOpenError


class SQLiteStore(Store):
    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._write_conn = self._connect()
            # FULL: a batch is acknowledged to the broker only after commit, so the commit must be durable.
            self._write_conn.execute("PRAGMA synchronous=FULL")
            self._create_schema()
            self._read_conn = self._connect()
        except (sqlite3.Error, OSError) as exc:
            raise StoreOpenError(f"cannot open the SQLite store {path}: {exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        return conn

    def _writer(self) -> sqlite3.Connection:
        return self._write_conn

    def _reader(self) -> sqlite3.Connection:
        return self._read_conn

    def _begin(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")

    def close(self) -> None:
        with self._write_lock, self._read_lock:
            self._write_conn.close()
            self._read_conn.close()

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"
