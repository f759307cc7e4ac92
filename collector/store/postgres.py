"""PostgreSQL store (psycopg 3): the shared store when several collectors or hosts write."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.abc import Buffer
from psycopg.types.string import StrDumperUnknown

from ctxscope.collector.store.base import Store, StoreOpenError, StoreReadOnlyError

# PostgreSQL text and JSONB cannot hold U+0000 (text refuses the byte, JSONB the `\u0000` escape);
# it is stored as U+FFFD, the replacement character, so such a record is stored instead of refused.
NUL_STANDIN = "\ufffd"
# A JSON `\u0000` escape: preceded by an even number of backslashes (escaped backslashes), not odd.
_JSON_NUL = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


class _NulSafeStr(StrDumperUnknown):
    def dump(self, obj: str) -> Buffer | None:
        return super().dump(obj.replace("\x00", NUL_STANDIN) if "\x00" in obj else obj)


class PostgresStore(Store):
    json_type = "JSONB"
    blob_type = "BYTEA"
    bool_type = "INTEGER"
    key_type = "BIGINT"
    placeholder = "%s"
    max_params = 65535  # the wire protocol's limit

    def __init__(self, url: str, *, read_only: bool = False) -> None:
        super().__init__()
        self._url = url
        self.read_only = read_only
        try:
            if not read_only:  # read-only: no writer connection, no schema or migration
                self._write_conn = self._connect(autocommit=False)
                self._create_schema()
            self._read_conn = self._connect(autocommit=True)
            if read_only:
                self._require_current_schema()
        except psycopg.Error as exc:
            raise StoreOpenError(f"cannot open the PostgreSQL store: {' '.join(str(exc).split())}") from exc

    def _connect(self, autocommit: bool) -> psycopg.Connection:
        conn = psycopg.connect(self._url, autocommit=autocommit)
        conn.adapters.register_dumper(str, _NulSafeStr)
        return conn

    def _json_in(self, value: Any) -> str:
        text = super()._json_in(value)
        return _JSON_NUL.sub(r"\1\\ufffd", text) if "\\u0000" in text else text

    # A server restart breaks the connections: a write fails once (ingest retries the batch, not
    # acked) and the next one opens a new connection; a read retries at once.
    def _writer(self) -> psycopg.Connection:
        if self.read_only:
            raise StoreReadOnlyError("the PostgreSQL store was opened read-only")
        if self._write_conn.broken or self._write_conn.closed:
            self._write_conn = self._connect(autocommit=False)
        return self._write_conn

    def _reader(self) -> psycopg.Connection:
        if self._read_conn.broken or self._read_conn.closed:
            self._read_conn = self._connect(autocommit=True)
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

    def close(self) -> None:
        with self._write_lock, self._read_lock:
            if not self.read_only:
                self._write_conn.close()
            self._read_conn.close()

    def __repr__(self) -> str:
        info = self._read_conn.info
        return f"PostgresStore({info.user}@{info.host}:{info.port}/{info.dbname})"
