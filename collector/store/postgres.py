"""PostgreSQL store (psycopg 3): the shared store when several collectors or hosts write."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
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
# The head of an INSERT that `insert_rows` completes: a table and, optionally, the columns it fills.
_INSERT_HEAD = re.compile(r"INSERT INTO (\w+)(?: \(([\w, ]+)\))?")
_COLUMN_TYPES = (
    "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
    " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
)


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
    # A group commit, as on SQLite: each commit flushes and syncs the WAL's last, partly filled 8 KB
    # page again. Committing every few records (1,000 devices: 318 commits a second) wrote 7.9 KB per
    # record to the block device against 4.0 KB counted by the server
    # (results/collector/scale/README.md, "Where PostgreSQL's writes go").
    commit_gather_s = 0.2
    # A commit updates each of its devices' rows twice (last seen, newest values), and a version dead
    # inside its own transaction cannot be pruned before the commit: with full pages, a group commit of
    # hundreds of devices moved their rows to new pages (non-HOT updates), and at 1,000 devices the
    # table of 1,000 rows grew to 43 MB in a minute. Pages filled to a quarter keep the versions of a
    # commit beside their row.
    devices_room_ddl = "ALTER TABLE devices SET (fillfactor = 25)"

    def __init__(self, url: str, *, read_only: bool = False) -> None:
        super().__init__()
        self._url = url
        self._types: dict[str, list[str]] = {}  # _column_types
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

    def _column_types(self, cur: Any, head: str) -> list[str]:
        """Read from the catalog once per head (`insert_rows` then inserts one array per column)."""
        types = self._types.get(head)
        if types is None:
            match = _INSERT_HEAD.fullmatch(head)
            if match is None:
                raise ValueError(f"not the head of an INSERT: {head!r}")
            table, names = match.groups()
            cur.execute(_COLUMN_TYPES, (table,))
            of_column = dict(cur.fetchall())
            types = [of_column[name.strip()] for name in names.split(",")] if names else [*of_column.values()]
            self._types[head] = types
        return types

    def _stored_live(self, cur: Any, devices: Sequence[str]) -> dict[str, Any]:
        """As the base store's, with the devices as one array (one parameter: a statement psycopg
        parses once)."""
        cur.execute("SELECT device, live FROM devices WHERE device = ANY(%s) FOR UPDATE", (list(devices),))
        return {device: self._json_out(live) for device, live in cur.fetchall() if live is not None}

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

    @contextmanager
    def _reader_apart(self) -> Iterator[psycopg.Connection]:
        """In a read-only transaction, which a server-side cursor needs."""
        conn = self._connect(autocommit=False)
        try:
            conn.read_only = True
            yield conn
        finally:
            conn.close()

    def _streaming_cursor(self, conn: psycopg.Connection) -> Any:
        """A server-side cursor: a client-side one holds the whole result before the first row."""
        return conn.cursor(name="ctxscope_stream")

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
