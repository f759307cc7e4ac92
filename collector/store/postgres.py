"""PostgreSQL store (psycopg 3): the shared store when several collectors or hosts write."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from ctxscope.collector.store.base import Store


class PostgresStore(Store):
    json_type = "JSONB"
    blob_type = "BYTEA"
    bool_type = "INTEGER"
    placeholder = "%s"

    def __init__(self, url: str) -> None:
        super().__init__()
        self._url = url
        self._write_conn = psycopg.connect(url, autocommit=False)
        self._create_schema()
        self._read_conn = psycopg.connect(url, autocommit=True)

    # A server restart breaks the connections: a write fails once (ingest retries the batch, not
    # acked) and the next one opens a new connection; a read retries at once.
    def _writer(self) -> psycopg.Connection:
        if self._write_conn.broken or self._write_conn.closed:
            self._write_conn = psycopg.connect(self._url, autocommit=False)
        return self._write_conn

    def _reader(self) -> psycopg.Connection:
        if self._read_conn.broken or self._read_conn.closed:
            self._read_conn = psycopg.connect(self._url, autocommit=True)
        return self._read_conn

    def _query(self, statement: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Reads retry once on a fresh connection when the server dropped the old one."""
        try:
            return super()._query(statement, params)
        except psycopg.OperationalError:
            if not self._read_conn.broken:
                raise
            return super()._query(statement, params)

    def _begin(self, conn: psycopg.Connection) -> None:
        """psycopg opens a transaction at the first statement of a non-autocommit connection."""

    def is_transient(self, error: Exception) -> bool:
        return isinstance(error, psycopg.OperationalError)  # connection lost, server shutting down

    def close(self) -> None:
        with self._write_lock, self._read_lock:
            self._write_conn.close()
            self._read_conn.close()

    def __repr__(self) -> str:
        info = self._write_conn.info
        return f"PostgresStore({info.user}@{info.host}:{info.port}/{info.dbname})"
