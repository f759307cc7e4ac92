"""Store interface and the SQL both backends share: schema, idempotent batch writes, read API.

Records are keyed by (device, stream, seq) and inserted with ON CONFLICT DO NOTHING, so redelivered
messages are counted as duplicates and never stored twice. State messages (status, meta) update the
device row only when their birth is not older than the stored one. A batch is one transaction.
"""

from __future__ import annotations

import base64
import functools
import json
import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ctxscope.shared.messages import (
    CommandAck,
    DeviceMeta,
    Log,
    Message,
    PointResult,
    RunFinished,
    RunProgress,
    RunStarted,
    Status,
    TelemetryBatch,
)


class StoreOpenError(RuntimeError):
    """A store that cannot be opened (unreachable, damaged, read-only); the message is one line."""


@dataclass(frozen=True)
class Accepted:
    """A validated message and the topic it came on; `retained` when the broker replayed a retained
    message (on subscribe) rather than forwarding a fresh one: it says nothing of the device now."""

    topic: str
    message: Message
    retained: bool = False


@dataclass(frozen=True)
class Rejected:
    """Bytes that failed validation: counted per (reason, topic) with the last example kept."""

    topic: str
    reason: str
    detail: str
    payload: bytes


@dataclass
class BatchOutcome:
    stored: int = 0
    duplicates: int = 0
    state_applied: int = 0
    state_stale: int = 0
    rejected: int = 0
    devices: set[str] = field(default_factory=set)


class LiveValues:
    """The newest sample of each telemetry source of each device within one batch."""

    def __init__(self) -> None:
        self.by_device: dict[str, dict[str, dict[str, Any]]] = {}

    def add(self, msg: TelemetryBatch) -> None:
        t = msg.timestamps()
        if not len(t):
            return
        newest = int(np.argmax(t))
        wall_ns = int(t[newest]) + msg.mono_to_wall_ns
        sources = self.by_device.setdefault(msg.device, {})
        if sources.get(msg.source, {}).get("wall_ns", -1) >= wall_ns:
            return
        channels = {}
        for name, channel in msg.channels.items():
            values = channel.values()
            if newest < len(values):
                value = float(values[newest])
                channels[name] = {"unit": channel.unit, "value": value if math.isfinite(value) else None}
        sources[msg.source] = {"wall_ns": wall_ns, "channels": channels}

    def merged(self, stored: dict[str, Any], device: str) -> dict[str, Any]:
        """`stored` (a device's live column) with this batch's newer sources replacing older ones."""
        out = dict(stored)
        for source, entry in self.by_device[device].items():
            if out.get(source, {}).get("wall_ns", -1) < entry["wall_ns"]:
                out[source] = entry
        return out


def _lock_order(item: Accepted | Rejected) -> tuple[str, ...]:
    """The order a batch's items are written in: rows are locked in this order (rejects by reason and
    topic, then devices by id; the sort is stable, so each device's own order is kept). Collectors
    sharing a subscription write batches that touch the same devices at once, and two transactions
    locking two rows in opposite orders would deadlock."""
    if isinstance(item, Rejected):
        return ("", item.reason, item.topic)
    return ("device", item.message.device)


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


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

REJECT_EXAMPLE_BYTES = 256
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

    def __init__(self) -> None:
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()

    # -- backend hooks --------------------------------------------------------------------------

    @abstractmethod
    def _writer(self) -> Any:
        """The DB-API connection that writes."""

    @abstractmethod
    def _reader(self) -> Any:
        """The DB-API connection that reads (autocommit, so each read sees the latest commit)."""

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

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
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

    def _sql(self, statement: str) -> str:
        return statement if self.placeholder == "?" else statement.replace("?", self.placeholder)

    # -- writes ---------------------------------------------------------------------------------

    def write_batch(self, items: Sequence[Accepted | Rejected]) -> BatchOutcome:
        """Store a batch in one transaction: every item is stored (or counted) or none is."""
        outcome = BatchOutcome()
        now = time.time_ns()
        live = LiveValues()
        with self._transaction() as cur:
            for item in sorted(items, key=_lock_order):
                if isinstance(item, Rejected):
                    self._write_reject(cur, item, now)
                    outcome.rejected += 1
                else:
                    self._write_message(cur, item.message, now, outcome, item.retained, live)
            self._write_live(cur, live)
        return outcome

    def _write_live(self, cur: Any, live: LiveValues) -> None:
        """Merge the batch's newest telemetry values into each device's `live` column: one read and
        one update per device per batch, on the row that the batch already updated (last_seen). On
        PostgreSQL the rows are locked first: collectors sharing a subscription may merge at once."""
        lock = " FOR UPDATE" if self.placeholder == "%s" else ""
        for devices in _chunks(sorted(live.by_device), 500):
            marks = ", ".join("?" * len(devices))
            query = f"SELECT device, live FROM devices WHERE device IN ({marks}){lock}"
            cur.execute(self._sql(query), devices)
            stored = {row[0]: self._json_out(row[1]) for row in cur.fetchall()}
            updates = []
            for device in devices:
                merged = live.merged(stored.get(device) or {}, device)
                updates.append((self._json_in(merged), device))
            cur.executemany(self._sql("UPDATE devices SET live = ? WHERE device = ?"), updates)

    def _write_reject(self, cur: Any, item: Rejected, now: int) -> None:
        cur.execute(
            self._sql(
                "INSERT INTO rejects VALUES (?, ?, 1, ?, ?, ?) ON CONFLICT (reason, topic) DO UPDATE SET"
                " count = rejects.count + 1, last_detail = excluded.last_detail,"
                " last_example = excluded.last_example, last_ns = excluded.last_ns"
            ),
            (item.reason, item.topic, item.detail, item.payload[:REJECT_EXAMPLE_BYTES], now),
        )

    def _write_message(
        self, cur: Any, msg: Message, now: int, outcome: BatchOutcome, retained: bool, live: LiveValues
    ) -> None:
        # A replayed retained message (every collector restart) must not make a silent device look seen.
        seen = "NOTHING" if retained else "UPDATE SET last_seen_ns = excluded.last_seen_ns"
        cur.execute(
            self._sql(
                "INSERT INTO devices (device, first_seen_ns, last_seen_ns) VALUES (?, ?, ?)"
                f" ON CONFLICT (device) DO {seen}"
            ),
            (msg.device, now, now),
        )
        outcome.devices.add(msg.device)
        if isinstance(msg, Status | DeviceMeta):
            if self._apply_state(cur, msg):
                outcome.state_applied += 1
            else:
                outcome.state_stale += 1
            return
        cur.execute(
            self._sql("INSERT INTO records VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"),
            (msg.device, msg.stream, msg.seq, msg.kind, msg.ts, now),
        )
        if cur.rowcount == 0:
            outcome.duplicates += 1
            return
        self._write_typed(cur, msg)
        if isinstance(msg, TelemetryBatch):
            live.add(msg)
        outcome.stored += 1

    def _apply_state(self, cur: Any, msg: Status | DeviceMeta) -> bool:
        body = self._json_in(msg.model_dump(mode="python"))
        if isinstance(msg, Status):
            cur.execute(
                self._sql(
                    "UPDATE devices SET state = ?, birth = ?, status = ? WHERE device = ?"
                    " AND (birth IS NULL OR birth <= ?)"
                ),
                (msg.state, msg.birth, body, msg.device, msg.birth),
            )
        else:
            cur.execute(
                self._sql(
                    "UPDATE devices SET meta = ?, meta_birth = ? WHERE device = ?"
                    " AND (meta_birth IS NULL OR meta_birth <= ?)"
                ),
                (body, msg.birth, msg.device, msg.birth),
            )
        return bool(cur.rowcount)

    def _write_typed(self, cur: Any, msg: Message) -> None:
        key = (msg.device, msg.stream, msg.seq, msg.ts)
        if isinstance(msg, PointResult):
            cur.execute(
                self._sql("INSERT INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
                (
                    *key, msg.run_id, msg.point_id, msg.model, msg.family, msg.context_len, msg.precision,
                    msg.logits, msg.outcome, msg.error,
                    self._json_in({name: m.model_dump() for name, m in msg.metrics.items()}),
                    self._json_in(msg.implementation), self._json_in(msg.manifest),
                    self._json_in(msg.details),
                ),
            )  # fmt: skip
        elif isinstance(msg, TelemetryBatch):
            t = msg.timestamps()
            wall = (
                (_int64(int(t.min()) + msg.mono_to_wall_ns), _int64(int(t.max()) + msg.mono_to_wall_ns))
                if len(t)
                else (None, None)
            )
            cur.execute(
                self._sql("INSERT INTO telemetry VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
                (*key, msg.source, len(t), msg.mono_to_wall_ns, *wall, msg.t_ns),
            )
            for name, channel in msg.channels.items():
                cur.execute(
                    self._sql("INSERT INTO telemetry_channels VALUES (?, ?, ?, ?, ?, ?, ?)"),
                    (msg.device, msg.stream, msg.seq, name, channel.unit, channel.dtype, channel.data),
                )
        elif isinstance(msg, RunStarted):
            cur.execute(
                self._sql(
                    "INSERT INTO runs (device, run_id, plan, plan_hash, total_points, manifest, started_ts)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device, run_id) DO UPDATE SET"
                    " plan = excluded.plan, plan_hash = excluded.plan_hash,"
                    " total_points = excluded.total_points, manifest = excluded.manifest,"
                    " started_ts = excluded.started_ts"
                ),
                (msg.device, msg.run_id, self._json_in(msg.plan), msg.plan_hash, msg.total_points,
                 self._json_in(msg.manifest), msg.ts),
            )  # fmt: skip
        elif isinstance(msg, RunProgress):
            cur.execute(
                self._sql(
                    "INSERT INTO runs (device, run_id, done, total, point, progress_seq)"
                    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (device, run_id) DO UPDATE SET"
                    " done = excluded.done, total = excluded.total, point = excluded.point,"
                    " progress_seq = excluded.progress_seq"
                    " WHERE runs.progress_seq IS NULL OR runs.progress_seq < excluded.progress_seq"
                ),
                (msg.device, msg.run_id, msg.done, msg.total, msg.point, msg.seq),
            )
        elif isinstance(msg, RunFinished):
            cur.execute(
                self._sql(
                    "INSERT INTO runs (device, run_id, outcome, points_ok, points_failed, error, finished_ts)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device, run_id) DO UPDATE SET"
                    " outcome = excluded.outcome, points_ok = excluded.points_ok,"
                    " points_failed = excluded.points_failed, error = excluded.error,"
                    " finished_ts = excluded.finished_ts"
                ),
                (msg.device, msg.run_id, msg.outcome, msg.points_ok, msg.points_failed, msg.error, msg.ts),
            )
        elif isinstance(msg, Log):
            cur.execute(
                self._sql("INSERT INTO logs VALUES (?, ?, ?, ?, ?, ?, ?)"),
                (*key, msg.level, msg.logger, msg.message),
            )
        elif isinstance(msg, CommandAck):
            cur.execute(
                self._sql("INSERT INTO command_acks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"),
                (*key, msg.command_id, msg.name, int(msg.accepted), msg.reason, msg.run_id),
            )
        else:
            raise ValueError(f"a {msg.kind!r} message is not a record the collector stores")

    # -- reads ----------------------------------------------------------------------------------

    def _query(self, statement: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._read_lock:
            cur = self._reader().cursor()
            cur.execute(self._sql(statement), tuple(params))
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def devices(self, names: Sequence[str] = ()) -> list[dict[str, Any]]:
        """Every device (or those of `names` the store has seen), by name, with its state, meta and
        `live` telemetry (source -> its newest batch's wall time and the newest value of each channel;
        None before its first batch under this schema). Named devices are picked in the query, so a
        dashboard asking for a few of 3,000 decodes a few rows. `status` and `meta` are decoded once
        per distinct text and shared between callers: read them, never change them."""
        if not names:
            return [self._device_row(row) for row in self._query("SELECT * FROM devices ORDER BY device")]
        rows = []
        for chunk in _chunks(sorted(set(names)), 500):
            marks = ", ".join("?" * len(chunk))
            rows += self._query(f"SELECT * FROM devices WHERE device IN ({marks}) ORDER BY device", chunk)
        return [self._device_row(row) for row in rows]

    def device(self, device: str) -> dict[str, Any] | None:
        """One device's row as `devices()` gives it, or None when the store has never seen it."""
        rows = self._query("SELECT * FROM devices WHERE device = ?", (device,))
        return self._device_row(rows[0]) if rows else None

    def _device_row(self, row: dict[str, Any]) -> dict[str, Any]:
        for column in ("status", "meta"):
            value = row[column]
            row[column] = _decoded_state(value) if isinstance(value, str) else self._json_out(value)
        row["live"] = self._json_out(row["live"])
        return row

    def record_count(self, device: str | None = None) -> int:
        if device is None:
            return int(self._query("SELECT COUNT(*) AS n FROM records")[0]["n"])
        return int(self._query("SELECT COUNT(*) AS n FROM records WHERE device = ?", (device,))[0]["n"])

    def record_seqs(self, device: str, stream: str) -> list[int]:
        rows = self._query(
            "SELECT seq FROM records WHERE device = ? AND stream = ? ORDER BY seq", (device, stream)
        )
        return [int(r["seq"]) for r in rows]

    def streams(self, device: str) -> list[dict[str, Any]]:
        """Per stream of a device: records held, first and last seq, when the last one arrived."""
        return self._query(
            "SELECT stream, COUNT(*) AS records, MIN(seq) AS first_seq, MAX(seq) AS last_seq,"
            " MAX(received_ns) AS last_received_ns FROM records WHERE device = ? GROUP BY stream"
            " ORDER BY MIN(received_ns)",
            (device,),
        )

    def gaps(self, device: str) -> list[Gap]:
        """Missing seq ranges per stream of a device (a stream's seqs start at 1)."""
        rows = self._query(
            "SELECT stream, prev + 1 AS first, seq - 1 AS last FROM ("
            " SELECT stream, seq, LAG(seq, 1, 0) OVER (PARTITION BY stream ORDER BY seq) AS prev"
            " FROM records WHERE device = ?) AS ordered WHERE seq > prev + 1 ORDER BY stream, first",
            (device,),
        )
        return [Gap(r["stream"], int(r["first"]), int(r["last"])) for r in rows]

    def results(self, device: str, run_id: str | None = None) -> list[dict[str, Any]]:
        where, params = (
            ("device = ?", [device]) if run_id is None else ("device = ? AND run_id = ?", [device, run_id])
        )
        rows = self._query(f"SELECT * FROM results WHERE {where} ORDER BY ts, seq", params)
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

    def telemetry_channels(self, device: str) -> list[tuple[str, str, str]]:
        """(source, channel, unit) of every telemetry channel a device has sent."""
        rows = self._query(
            "SELECT DISTINCT t.source, c.channel, c.unit FROM telemetry t JOIN telemetry_channels c"
            " ON c.device = t.device AND c.stream = t.stream AND c.seq = t.seq WHERE t.device = ?"
            " ORDER BY t.source, c.channel",
            (device,),
        )
        return [(r["source"], r["channel"], r["unit"]) for r in rows]

    def latest_telemetry(
        self, device: str, source: str, channel: str, seconds: float
    ) -> TelemetrySeries | None:
        """The last `seconds` of one channel, ending at its newest sample; None if never sent."""
        rows = self._query(
            "SELECT t.mono_to_wall_ns, t.t_ns, c.unit, c.dtype, c.data FROM telemetry t"
            " JOIN telemetry_channels c ON c.device = t.device AND c.stream = t.stream AND c.seq = t.seq"
            " WHERE t.device = ? AND t.source = ? AND c.channel = ? AND t.wall_end_ns >= ("
            "  SELECT MAX(wall_end_ns) FROM telemetry WHERE device = ? AND source = ?) - ?"
            " ORDER BY t.wall_start_ns",
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


def _int64(value: int) -> int:
    """Clamp a derived time (timestamp + offset) into a BIGINT column's range."""
    return max(-(2**63), min(2**63 - 1, value))


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return {"base64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
