"""Store interface and the SQL both backends share: schema, idempotent batch writes, read API.

Records are keyed by (device, stream, seq) and inserted with ON CONFLICT DO NOTHING, so redelivered
messages are counted as duplicates and never stored twice. State messages (status, meta) update the
device row only when their birth is not older than the stored one. A batch is one transaction
(`writes.py` writes it). The SQLite store stages telemetry and results in arrival order first and
merges them later (`staging.py`); readers query views over both (`all_records`, ...), so they see a
staged record as they see a merged one.
"""

from __future__ import annotations

import base64
import functools
import json
import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from ctxscope.collector.store.history import TelemetryHistory, read_history, rollup_series
from ctxscope.collector.store.overlay import StagedNews
from ctxscope.collector.store.pruned_keys import pruned_among
from ctxscope.collector.store.upkeep import Upkeep
from ctxscope.collector.store.writes import (
    Accepted,
    BatchOutcome,
    BatchWrite,
    RecordKey,
    Rejected,
    Stager,
    chunks,
    insert_rows,
)


class StoreReadOnlyError(RuntimeError):
    """A write asked of a store opened read-only."""


class StoreOpenError(RuntimeError):
    """A store that cannot be opened (unreachable, damaged, read-only); the message is one line."""


@dataclass(frozen=True)
class Gap:
    """Seqs `first`..`last` (inclusive) of a stream that never arrived."""

    stream: str
    first: int
    last: int


@dataclass(frozen=True)
class TelemetrySeries:
    """One telemetry channel over a time span: wall-clock ns timestamps and values."""

    source: str
    channel: str
    unit: str
    wall_ns: np.ndarray
    values: np.ndarray


# Column types that differ between backends are spelled {json}, {blob}, {bool}.
SCHEMA = """
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

# Seconds a reader's knowledge of which devices have staged telemetry is used before it is refreshed.
STAGED_NEWS_AGE_S = 1.0
# Distinct status and meta texts whose decoded value is kept (about 10,000 devices' worth of both).
DECODED_STATE_TEXTS = 32768


@functools.lru_cache(maxsize=DECODED_STATE_TEXTS)
def _decoded_state(text: str) -> Any:
    """A device's status or meta column decoded, once per distinct text: both change rarely (a state
    change, a restart), while every fleet answer reads every device's. Callers share the value."""
    return json.loads(text)


class Store(ABC):
    """A collector store. Writes come from one thread (ingest); reads from any thread."""

    json_type = "TEXT"
    blob_type = "BLOB"
    bool_type = "INTEGER"
    placeholder = "?"
    # An arrival-ordered integer key (staging tables): SQLite's rowid.
    key_type = "INTEGER"
    # Room left on each page of `devices` for new versions of its rows (migration 5); empty where the
    # backend updates rows in place.
    devices_room_ddl = ""
    # Ends a table kept as its primary key's B-tree alone (migration 6); empty where there is no such kind.
    without_rowid = ""
    # The minute summaries of the raw telemetry window (minutes.py): a store that keeps them (SQLite,
    # which merges staged batches) creates them in migration 9; one that does not reads every batch.
    minute_summaries_ddl = ""
    # Set by a store that stages its frequent records (staging.py); None writes them in place.
    stager: Stager | None = None
    # Seconds ingest waits for more messages before it commits a batch (a group commit).
    commit_gather_s = 0.0
    # Parameters one statement may bind (multi-row inserts are sized by it).
    max_params = 999

    def __init__(self) -> None:
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._staged_news = StagedNews()
        self.upkeep = Upkeep()

    # -- backend hooks --------------------------------------------------------------------------

    @abstractmethod
    def _writer(self) -> Any:
        """The DB-API connection that writes."""

    @abstractmethod
    def _reader(self) -> Any:
        """The DB-API connection that reads (autocommit, so each read sees the latest commit)."""

    @abstractmethod
    def _reader_apart(self) -> AbstractContextManager[Any]:
        """A read-only connection of its own, closed at the end (`_stream`)."""

    @abstractmethod
    def _begin(self, conn: Any) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    def _json_in(self, value: Any) -> str:
        """A JSON column's text; backends whose JSON type refuses some text override it."""
        return _to_json(value)

    def _json_out(self, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value

    # -- setup ----------------------------------------------------------------------------------

    def _create_schema(self) -> None:
        from ctxscope.collector.store.migrations import hold_migration_lock, migrate

        ddl = SCHEMA.format(json=self.json_type, blob=self.blob_type, bool=self.bool_type)
        with self._transaction() as cur:
            hold_migration_lock(self, cur)
            for statement in ddl.split(";"):
                if statement.strip():
                    cur.execute(statement)
        migrate(self, time.time_ns())

    def _require_current_schema(self) -> None:
        """A read-only open migrates nothing, and this code's readers query the views of the latest
        schema: refuse a store at another version with a line that says what to do."""
        from ctxscope.collector.store.migrations import LATEST

        version = self._query("SELECT MAX(version) AS v FROM schema_migrations")[0]["v"] or 0
        if version < LATEST:
            raise StoreOpenError(
                f"the store is at schema version {version} and this ctxscope reads version {LATEST}:"
                " start the collector on it once (it upgrades the store), then open it read-only"
            )
        if version > LATEST:
            raise StoreOpenError(
                f"the store is at schema version {version}; this ctxscope knows versions up to {LATEST}:"
                " upgrade ctxscope"
            )

    @contextmanager
    def _transaction(self, committed: Callable[[], None] | None = None) -> Iterator[Any]:
        """One write transaction; `committed` runs after its commit, before the next one begins."""
        with self._write_lock:
            conn = self._writer()
            self._begin(conn)
            cur = conn.cursor()
            try:
                yield cur
            except BaseException:
                conn.rollback()
                raise
            conn.commit()
            if committed is not None:
                committed()

    def _sql(self, statement: str) -> str:
        return statement if self.placeholder == "?" else statement.replace("?", self.placeholder)

    # -- writes ---------------------------------------------------------------------------------

    def write_batch(
        self, items: Sequence[Accepted | Rejected], received_ns: int | None = None
    ) -> BatchOutcome:
        """Store a batch in one transaction: every item is stored (or counted) or none is. `received_ns`:
        when the batch counts as received (its devices' last-seen time), now unless given (an import
        gives its records' own time)."""
        with self._transaction() as cur:
            return BatchWrite(self, cur, received_ns).run(items)

    def merge_staged(self) -> int:
        """Merge the staged records now (staging.py); the number merged (a store that stages none has
        none to merge)."""
        return 0

    def _insert_new_records(self, cur: Any, rows: list[tuple[Any, ...]]) -> set[RecordKey]:
        """Insert the records' key rows (device, stream, seq, kind, ts, received_ns), sorted by key,
        and return the keys that were new: on PostgreSQL the insert itself says so (RETURNING), since
        another collector may insert the same key at the same time; a key retention pruned is not new
        (pruned_keys.py)."""
        tail = "ON CONFLICT DO NOTHING RETURNING device, stream, seq"
        returned = insert_rows(self, cur, "INSERT INTO records", rows, tail, returning=True)
        new = {(device, stream, int(seq)) for device, stream, seq in returned}
        # A new key row in a pruned range was a telemetry batch retention has removed: take it back.
        # Looked up after the insert, so that a range another collector's pass commits meanwhile is
        # seen (the insert waits for that pass's deletion of the key row).
        for device, stream, seq in pruned_among(self, cur, new):
            cur.execute(
                self._sql("DELETE FROM records WHERE device = ? AND stream = ? AND seq = ?"),
                (device, stream, seq),
            )
            new.discard((device, stream, seq))
        return new

    def _column_types(self, cur: Any, head: str) -> list[str] | None:
        """The SQL types of the columns that an `INSERT INTO table [(columns)]` head fills, for a store
        that inserts rows as one array per column (PostgreSQL); None inserts them as VALUES lists."""
        return None

    def _stored_live(self, cur: Any, devices: Sequence[str]) -> dict[str, Any]:
        """The `live` column of each of `devices` that has one, locked until the batch commits (on
        PostgreSQL collectors sharing a subscription may merge at once)."""
        marks = ", ".join("?" * len(devices))
        query = f"SELECT device, live FROM devices WHERE device IN ({marks}) FOR UPDATE"
        cur.execute(self._sql(query), devices)
        return {device: self._json_out(live) for device, live in cur.fetchall() if live is not None}

    def _telemetry_pruned(self, cur: Any, pruned: dict[tuple[str, str], tuple[int, set[str]]]) -> None:
        """Retention pruned raw batches, in the transaction of `cur`: per (device, source), the newest
        sample pruned and the channels. A store that summarizes its raw window updates the summaries;
        one that does not (PostgreSQL) has nothing to do."""
        return None

    # -- reads ----------------------------------------------------------------------------------

    def _query(self, statement: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._read_lock:
            cur = self._reader().cursor()
            cur.execute(self._sql(statement), tuple(params))
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def _stream(self, statement: str, params: Sequence[Any], size: int) -> Iterator[list[dict[str, Any]]]:
        """The rows of one statement (one snapshot of the store), `size` at a time, read on a connection
        of their own: a read of millions of rows holds neither the memory of all of them nor the shared
        reader, which every page's reads wait for."""
        with self._reader_apart() as conn:
            cur = self._streaming_cursor(conn)
            cur.execute(self._sql(statement), tuple(params))
            names = [d[0] for d in cur.description]
            while rows := cur.fetchmany(size):
                yield [dict(zip(names, row, strict=True)) for row in rows]

    def _streaming_cursor(self, conn: Any) -> Any:
        """A cursor that fetches its rows as they are asked for."""
        return conn.cursor()

    def devices(self, names: Sequence[str] = ()) -> list[dict[str, Any]]:
        """Every device (or those of `names` the store has seen), by name, with its state, meta, last-seen
        time and `live` telemetry (source -> its newest batch's wall time and the newest value of each
        channel; None before its first batch under this schema), the last two with its staged records'
        (overlay.py). Named devices are picked in the query, so a
        dashboard asking for a few of 3,000 decodes a few rows. `status` and `meta` are decoded once
        per distinct text and shared between callers: read them, never change them."""
        self._staged_news.refresh(self._query)
        if not names:
            return [self._device_row(row) for row in self._query("SELECT * FROM devices ORDER BY device")]
        rows = []
        for chunk in chunks(sorted(set(names)), 500):
            marks = ", ".join("?" * len(chunk))
            rows += self._query(f"SELECT * FROM devices WHERE device IN ({marks}) ORDER BY device", chunk)
        return [self._device_row(row) for row in rows]

    def device(self, device: str) -> dict[str, Any] | None:
        """One device's row as `devices()` gives it, or None when the store has never seen it."""
        self._staged_news.refresh(self._query)
        rows = self._query("SELECT * FROM devices WHERE device = ?", (device,))
        return self._device_row(rows[0]) if rows else None

    def _device_row(self, row: dict[str, Any]) -> dict[str, Any]:
        for column in ("status", "meta"):
            value = row[column]
            row[column] = _decoded_state(value) if isinstance(value, str) else self._json_out(value)
        row["live"] = self._json_out(row["live"])
        return self._staged_news.apply(row)

    def record_count(self, device: str | None = None) -> int:
        """Records stored: those held and the telemetry batches retention has pruned since."""
        where, params = ("", ()) if device is None else (" WHERE device = ?", (device,))
        held = self._query(f"SELECT COUNT(*) AS n FROM all_records{where}", params)[0]["n"]
        pruned = self._query(f"SELECT SUM(pruned) AS n FROM pruned_keys{where}", params)[0]["n"]
        return int(held) + int(pruned or 0)

    def record_seqs(self, device: str, stream: str) -> list[int]:
        """The seqs of a stream's records held (not those of pruned telemetry)."""
        rows = self._query(
            "SELECT seq FROM all_records WHERE device = ? AND stream = ? ORDER BY seq", (device, stream)
        )
        return [int(r["seq"]) for r in rows]

    def streams(self, device: str) -> list[dict[str, Any]]:
        """Per stream of a device: records stored (held, and pruned by retention), first and last seq,
        when the last one held arrived."""
        return self._query(
            "SELECT stream, CAST(SUM(n) AS BIGINT) AS records, MIN(first_seq) AS first_seq,"
            " MAX(last_seq) AS last_seq, MAX(received_ns) AS last_received_ns FROM ("
            " SELECT stream, COUNT(*) AS n, MIN(seq) AS first_seq, MAX(seq) AS last_seq,"
            " MAX(received_ns) AS received_ns FROM all_records WHERE device = ? GROUP BY stream"
            " UNION ALL SELECT stream, SUM(pruned), MIN(lo), MAX(hi), NULL FROM pruned_keys"
            " WHERE device = ? GROUP BY stream) AS parts GROUP BY stream"
            " ORDER BY MIN(received_ns) IS NOT NULL, MIN(received_ns), stream",
            (device, device),
        )

    def gaps(self, device: str) -> list[Gap]:
        """Missing seq ranges per stream of a device (a stream's seqs start at 1): seqs neither held
        nor in a range retention pruned."""
        rows = self._query(
            "SELECT stream, prev + 1 AS first, lo - 1 AS last FROM ("
            " SELECT stream, lo, COALESCE(MAX(hi) OVER (PARTITION BY stream ORDER BY lo, hi"
            " ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS prev FROM ("
            " SELECT stream, seq AS lo, seq AS hi FROM all_records WHERE device = ?"
            " UNION ALL SELECT stream, lo, hi FROM pruned_keys WHERE device = ?) AS spans) AS ordered"
            " WHERE lo > prev + 1 ORDER BY stream, first",
            (device, device),
        )
        return [Gap(r["stream"], int(r["first"]), int(r["last"])) for r in rows]

    def results(self, device: str, run_id: str | None = None) -> list[dict[str, Any]]:
        where, params = (
            ("device = ?", [device]) if run_id is None else ("device = ? AND run_id = ?", [device, run_id])
        )
        rows = self._query(f"SELECT * FROM all_results WHERE {where} ORDER BY ts, seq", params)
        for row in rows:
            for column in ("metrics", "implementation", "manifest", "details"):
                row[column] = self._json_out(row[column])
        return rows

    def runs(self, device: str | None = None) -> list[dict[str, Any]]:
        where, params = ("", []) if device is None else ("WHERE device = ?", [device])
        rows = self._query(f"SELECT * FROM runs {where} ORDER BY started_ts", params)
        for row in rows:
            row["plan"] = self._json_out(row["plan"])
            row["manifest"] = self._json_out(row["manifest"])
        return rows

    def logs(self, device: str, limit: int = 100) -> list[dict[str, Any]]:
        return self._query("SELECT * FROM logs WHERE device = ? ORDER BY ts DESC LIMIT ?", (device, limit))

    def command_acks(self, device: str) -> list[dict[str, Any]]:
        rows = self._query("SELECT * FROM command_acks WHERE device = ? ORDER BY ts", (device,))
        for row in rows:
            row["accepted"] = bool(row["accepted"])
        return rows

    def reject_counts(self) -> list[dict[str, Any]]:
        rows = self._query("SELECT * FROM rejects ORDER BY reason, topic")
        for row in rows:
            row["last_example"] = bytes(row["last_example"])
        return rows

    def _telemetry_views(self, device: str) -> tuple[str, str]:
        """The views of a device's telemetry (series of samples, batches): with the unmerged rows
        only if it has some, since they have no index by device (a scan of some 200,000 rows at
        3,000 devices). What was staged is known as of a refresh at most STAGED_NEWS_AGE_S old:
        the fleet view asks this for each device that had no `live` value when it read the rows (a
        device yet to send telemetry), and must not find its first batches staged since, 3,000 scans."""
        self._staged_news.refresh(self._query, STAGED_NEWS_AGE_S)
        if self._staged_news.has_telemetry(device):
            return "all_telemetry_series", "all_telemetry"
        return "telemetry_series", "merged_telemetry"

    def telemetry_channels(self, device: str) -> list[tuple[str, str, str]]:
        """(source, channel, unit) of the channels of each source's newest batch, from the device row's
        `live` column (kept at ingest): one row, where a scan of the device's telemetry costs about a
        second per day of it at 17 channels a second, on every device page and history request. A device
        without that column (a store written before it) is scanned: every channel it has sent."""
        row = self.device(device)
        live = row.get("live") if row is not None else None
        if isinstance(live, dict) and live:
            return sorted(
                (source, name, channel["unit"])
                for source, entry in live.items()
                for name, channel in entry.get("channels", {}).items()
            )
        series, _ = self._telemetry_views(device)
        rows = self._query(
            f"SELECT DISTINCT source, channel, unit FROM {series} WHERE device = ? ORDER BY source, channel",
            (device,),
        )
        return [(r["source"], r["channel"], r["unit"]) for r in rows]

    def latest_telemetry(
        self, device: str, source: str, channel: str, seconds: float
    ) -> TelemetrySeries | None:
        """The last `seconds` of one channel, ending at its newest sample; None if never sent."""
        series, batches = self._telemetry_views(device)
        rows = self._query(
            f"SELECT mono_to_wall_ns, t_ns, unit, dtype, data FROM {series}"
            " WHERE device = ? AND source = ? AND channel = ? AND wall_end_ns >= ("
            f"  SELECT MAX(wall_end_ns) FROM {batches} WHERE device = ? AND source = ?) - ?"
            " ORDER BY wall_start_ns",
            (device, source, channel, device, source, int(seconds * 1e9)),
        )
        if not rows:
            return None
        wall = np.concatenate(
            [np.frombuffer(bytes(r["t_ns"]), dtype="<i8") + int(r["mono_to_wall_ns"]) for r in rows]
        )
        values = np.concatenate(
            [np.frombuffer(bytes(r["data"]), dtype=f"<{r['dtype']}").astype(np.float64) for r in rows]
        )
        order = np.argsort(wall, kind="stable")
        wall, values = wall[order], values[order]
        keep = wall >= wall[-1] - int(seconds * 1e9)
        return TelemetrySeries(source, channel, rows[-1]["unit"], wall[keep], values[keep])

    def history_channels(self, device: str) -> list[tuple[str, str, str]]:
        """(source, channel, unit) of the channels a device sends now and of those it has rollups of: a
        device whose raw telemetry has all aged out still has its history. (A channel a source stopped
        sending appears once retention has rolled up its raw batches, after the raw window.)"""
        raw = self.telemetry_channels(device)
        sent = {(source, channel) for source, channel, _ in raw}
        rolled = [entry for entry in rollup_series(self._query, device) if entry[:2] not in sent]
        return sorted(raw + rolled)

    def telemetry_history(
        self, device: str, source: str, channel: str, since_ns: int, until_ns: int, max_points: int
    ) -> TelemetryHistory:
        """One channel over [since_ns, until_ns) in at most `max_points` buckets of count, mean, minimum
        and maximum, from its rollups and its raw telemetry, each sample counted once (history.py)."""
        series, _ = self._telemetry_views(device)
        key = (device, source, channel)
        return read_history(self._stream, series, key, since_ns, until_ns, max_points)


def _to_json(value: Any) -> str:
    """Compact JSON; JSON has no NaN or infinity, so a non-finite number in a free-form field (a
    result's details, a manifest) is stored as null rather than refusing the whole record."""
    try:
        return json.dumps(value, default=_json_default, separators=(",", ":"), allow_nan=False)
    except ValueError:
        return json.dumps(_finite(value), default=_json_default, separators=(",", ":"), allow_nan=False)


def _finite(value: Any) -> Any:
    # Recursion is bounded: decoded messages are at most shared.codec.MAX_DEPTH deep.
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return {"base64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
