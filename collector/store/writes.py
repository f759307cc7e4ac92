"""One batch of validated messages written in one transaction, a statement per kind of row.

A batch is written phase by phase: the rejects, then every device's row (first and last seen), then
state messages (status, meta), then the records' keys, which tell new records from redelivered ones,
then the typed rows of the new records, then each device's newest telemetry values. Each phase of the
frequent messages is one multi-row statement for the whole batch (as many rows as the backend's
parameter limit allows), not one per message nor `executemany`: Python's sqlite3 releases the
interpreter's lock around every row it steps, and a thread that must take the lock back while
another thread computes (a dashboard answer) waits up to the interpreter's switch interval (5 ms)
each time. Row by row, a telemetry batch of 500 messages took some 3,000 such waits: with one busy
thread beside it the writer stored 41 records a second (21,171 alone), and 3,643 with these
statements (bench/collector/writer_contention.py). Rare messages (runs, state, rejects) keep a
statement each.

A store with a stager (the SQLite store, staging.py) writes the new telemetry batches and point
results of a batch to its staging tables instead, in arrival order, and leaves their devices' rows to
the merge: the device-keyed rows are what made a record cost some four 4 KB pages of its own.

Collectors sharing a PostgreSQL store write at once, so every phase locks rows in one global order
(devices by id, record keys sorted), and the phases run in the same order in every collector: two
batches that touch the same rows wait for each other.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

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

REJECT_EXAMPLE_BYTES = 256
# Rows per statement where a statement names each row's key (lookups): far below both backends' limits.
ROWS_PER_STATEMENT = 500
RECORD_KINDS = (PointResult, TelemetryBatch, RunStarted, RunProgress, RunFinished, Log, CommandAck)
# The frequent records, which a store with a stager writes in arrival order first (staging.py).
STAGED_KINDS = (PointResult, TelemetryBatch)

RecordKey = tuple[str, str, int]
# How far past its arrival a telemetry sample may be dated and still count as on time for the live
# column (device clocks run somewhat ahead of the collector's; a minute is far more than NTP leaves).
LIVE_AHEAD_NS = 60 * 1_000_000_000
Row = tuple[Any, ...]
# A telemetry batch to stage: its `telemetry` row, its channels' (channel, unit, dtype, data) and its
# newest values as the `live` column holds them (source -> wall time and channel values).
StagedBatch = tuple[Row, list[Row], dict[str, Any]]


class Store(Protocol):
    """What a batch write needs of a store (base.Store provides it; base imports this module)."""

    placeholder: str
    max_params: int
    stager: Stager | None

    def _sql(self, statement: str) -> str: ...

    def _json_in(self, value: Any) -> str: ...

    def _json_out(self, value: Any) -> Any: ...

    def _insert_new_records(self, cur: Any, rows: list[tuple[Any, ...]]) -> set[RecordKey]: ...

    def _column_types(self, cur: Any, head: str) -> list[str] | None: ...

    def _stored_live(self, cur: Any, devices: Sequence[str]) -> dict[str, Any]: ...


class Stager(Protocol):
    """Where a store that stages records (staging.py) puts the new records of STAGED_KINDS."""

    def stage(self, cur: Any, now_ns: int, telemetry: list[StagedBatch], results: list[Row]) -> None: ...


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

    def add(self, msg: TelemetryBatch, t: list[int], received_ns: int) -> None:
        """`t`: the batch's timestamps as a list (numpy's argmax would give up the interpreter's lock
        for a few values, see the module's doc)."""
        newest = newest_values(msg, t, received_ns)
        if newest:
            self.by_device[msg.device] = merge_live(self.by_device.get(msg.device, {}), newest)

    def merged(self, stored: dict[str, Any], device: str) -> dict[str, Any]:
        """`stored` (a device's live column) with this batch's newer sources replacing older ones."""
        return merge_live(stored, self.by_device[device])


def newest_values(msg: TelemetryBatch, t: list[int], received_ns: int) -> dict[str, Any]:
    """A batch's newest sample as the `live` column holds it: {source: {wall_ns, channels}}, with
    `ahead: true` when the sample is dated more than LIVE_AHEAD_NS past the batch's arrival (see
    `live_order`); empty for a batch without samples. `t`: the batch's timestamps as a list."""
    if not t:
        return {}
    newest = t.index(max(t))
    channels = {}
    for name, channel in msg.channels.items():
        values = channel.values()
        if newest < len(values):
            value = float(values[newest])
            channels[name] = {"unit": channel.unit, "value": value if math.isfinite(value) else None}
    wall_ns = t[newest] + msg.mono_to_wall_ns
    entry: dict[str, Any] = {"wall_ns": wall_ns, "channels": channels}
    if wall_ns > received_ns + LIVE_AHEAD_NS:
        entry["ahead"] = True
    return {msg.source: entry}


def live_order(entry: dict[str, Any]) -> tuple[bool, int]:
    """Which of two live entries is newer: a sample dated ahead of its arrival loses to any that is
    not, and the later sample wins among alike. One sample dated years ahead (a board whose clock was
    briefly wrong) would otherwise hold the live column for good; a board whose clock always runs
    ahead still shows its newest sample."""
    return not entry.get("ahead", False), int(entry["wall_ns"])


def merge_live(older: dict[str, Any], newer: dict[str, Any]) -> dict[str, Any]:
    """Two `live` values as one: per source, the entry of the newer sample (the older one on a tie); an
    entry without its wall time (none is written so) is left out rather than stopping the merge."""
    out = dict(older)
    for source, entry in newer.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("wall_ns"), int):
            continue
        if source not in out or live_order(out[source]) < live_order(entry):
            out[source] = entry
    return out


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def insert_rows(
    store: Store,
    cur: Any,
    head: str,
    rows: Sequence[tuple[Any, ...]],
    tail: str = "",
    returning: bool = False,
) -> list[Any]:
    """`head VALUES (...), (...) tail` over `rows` (all of one width), in as few statements as the
    store's parameter limit allows; the rows the statements return when `returning`.

    Where the store names its columns' types (PostgreSQL), one statement instead, `head SELECT * FROM
    unnest(<one array per column>) tail`: its text is the same for any number of rows, so psycopg
    parses it once. psycopg parses every statement of more than 50 parameters anew, and for VALUES
    lists that parsing took about half of the writer's time (2 us a parameter)."""
    out: list[Any] = []
    if not rows:
        return out
    width = len(rows[0])
    types = store._column_types(cur, head)
    if types is not None:
        if len(types) != width:
            raise ValueError(f"{head!r} fills {len(types)} columns, the rows have {width}")
        arrays = ", ".join(f"%s::{type_}[]" for type_ in types)
        columns = [list(column) for column in zip(*rows, strict=True)]
        cur.execute(f"{head} SELECT * FROM unnest({arrays}) {tail}", columns)
        return list(cur.fetchall()) if returning else out
    marks = "(" + ", ".join("?" * width) + ")"
    for chunk in chunks(rows, max(1, store.max_params // width)):
        cur.execute(
            store._sql(f"{head} VALUES {', '.join([marks] * len(chunk))} {tail}"),
            [value for row in chunk for value in row],
        )
        if returning:
            out += cur.fetchall()
    return out


def _lock_order(item: Accepted | Rejected) -> tuple[str, ...]:
    """Rejects first (by reason and topic), then devices by id; the sort is stable, so each device's
    own messages keep their order (a run's progress, its state births)."""
    if isinstance(item, Rejected):
        return ("", item.reason, item.topic)
    return ("device", item.message.device)


def _int64(value: int) -> int:
    """Clamp a derived time (timestamp + offset) into a BIGINT column's range."""
    return max(-(2**63), min(2**63 - 1, value))


class BatchWrite:
    """Writes one batch through `cur`, inside the store's open transaction."""

    def __init__(self, store: Store, cur: Any, received_ns: int | None = None) -> None:
        """`received_ns`: when the batch counts as received, now unless given (an import gives its
        records' own time, never later than now); a batch given one never moves a last-seen back."""
        now = time.time_ns()
        self.store = store
        self.cur = cur
        self.now = now if received_ns is None else min(received_ns, now)
        self.backdated = received_ns is not None
        self.outcome = BatchOutcome()
        self.live = LiveValues()
        self.staged_kinds: tuple[type, ...] = STAGED_KINDS if store.stager is not None else ()

    def run(self, items: Sequence[Accepted | Rejected]) -> BatchOutcome:
        ordered = sorted(items, key=_lock_order)
        accepted = [item for item in ordered if isinstance(item, Accepted)]
        for item in ordered:
            if isinstance(item, Rejected):
                self._reject(item)
        self._touch_devices(accepted)
        records: list[Message] = []
        for item in accepted:
            msg = item.message
            if isinstance(msg, Status | DeviceMeta):
                self._apply_state(msg)
            elif isinstance(msg, RECORD_KINDS):
                records.append(msg)
            else:
                raise ValueError(f"a {msg.kind!r} message is not a record the collector stores")
        self._write_records(records)
        self._write_live()
        return self.outcome

    def _sql(self, statement: str) -> str:
        return self.store._sql(statement)

    def _reject(self, item: Rejected) -> None:
        self.cur.execute(
            self._sql(
                "INSERT INTO rejects VALUES (?, ?, 1, ?, ?, ?) ON CONFLICT (reason, topic) DO UPDATE SET"
                " count = rejects.count + 1, last_detail = excluded.last_detail,"
                " last_example = excluded.last_example, last_ns = excluded.last_ns"
            ),
            (item.reason, item.topic, item.detail, item.payload[:REJECT_EXAMPLE_BYTES], self.now),
        )
        self.outcome.rejected += 1

    def _touch_devices(self, accepted: list[Accepted]) -> None:
        """One row per device, made at its first message; its last-seen time moves on for any fresh
        message (an import's batch, received at its records' own time, never moves it back). A replayed
        retained message (every collector restart) is no sign of life.

        One statement for every device of the batch, in device order, so that the rows are locked in
        the global order: `DO UPDATE ... WHERE` locks every conflicting row even where it updates
        none (PostgreSQL). A device known only from retained messages is given a first-seen time 1 ns
        before its last-seen one, which is how the statement tells it from a fresh one."""
        fresh: dict[str, bool] = {}
        staged_only: dict[str, bool] = {}
        for item in accepted:
            device, staged = item.message.device, isinstance(item.message, self.staged_kinds)
            fresh[device] = fresh.get(device, False) or not item.retained
            staged_only[device] = staged_only.get(device, True) and staged and not item.retained
        self.outcome.devices.update(fresh)
        # A staged record's time reaches the row when it is merged (staging.py): readers take the
        # newer of the two meanwhile, and updating the row here would dirty a page per device.
        news = [(device, self.now, self.now) for device, only in staged_only.items() if only]
        insert_rows(self.store, self.cur, "INSERT INTO devices (device, first_seen_ns, last_seen_ns)", news,
                    "ON CONFLICT (device) DO NOTHING")  # fmt: skip
        rows = [
            (device, self.now if fresh_ else self.now - 1, self.now)
            for device, fresh_ in fresh.items()
            if not staged_only[device]
        ]
        insert_rows(
            self.store,
            self.cur,
            "INSERT INTO devices (device, first_seen_ns, last_seen_ns)",
            rows,
            "ON CONFLICT (device) DO UPDATE SET last_seen_ns = excluded.last_seen_ns"
            " WHERE excluded.first_seen_ns = excluded.last_seen_ns"
            # live ingest follows the collector's clock even when it steps back; an import never rewinds
            + (" AND devices.last_seen_ns < excluded.last_seen_ns" if self.backdated else ""),
        )

    def _apply_state(self, msg: Status | DeviceMeta) -> None:
        """Keep the newer of the stored status (or meta) and `msg`: within one stream the higher birth
        (the agent counts its connections in its spool), across streams the later device clock. A
        board whose spool was lost or reinstalled starts a new stream whose births count from 1 again;
        ordered by birth alone its every status would be stale until it had reconnected as often as
        before, and the dashboard would show its last state (the old will: offline) all that time."""
        value, birth = ("status", "birth") if isinstance(msg, Status) else ("meta", "meta_birth")
        lock = " FOR UPDATE" if self.store.placeholder == "%s" else ""
        self.cur.execute(
            self._sql(f"SELECT {birth}, {value} FROM devices WHERE device = ?{lock}"), (msg.device,)
        )
        row = self.cur.fetchone()
        if row is None or (
            row[0] is not None and not _newer_state(msg, int(row[0]), self.store._json_out(row[1]))
        ):
            self.outcome.state_stale += 1
            return
        body = self.store._json_in(msg.model_dump(mode="python"))
        if isinstance(msg, Status):
            update = "UPDATE devices SET state = ?, birth = ?, status = ? WHERE device = ?"
            self.cur.execute(self._sql(update), (msg.state, msg.birth, body, msg.device))
        else:
            update = "UPDATE devices SET meta = ?, meta_birth = ? WHERE device = ?"
            self.cur.execute(self._sql(update), (body, msg.birth, msg.device))
        self.outcome.state_applied += 1

    def _write_records(self, records: list[Message]) -> None:
        """Key every record; those whose key is new (the first of a key within the batch, in arrival
        order) get their typed rows, the rest are counted as duplicates. Only the first of a key is
        offered to the store: two kinds under one key (a result and a log both at seq 7) would
        otherwise be keyed as one kind and typed as the other, and a staged record whose key row
        already exists would stop every later merge."""
        first: dict[RecordKey, Message] = {}
        for msg in records:
            first.setdefault((msg.device, msg.stream, msg.seq), msg)
        keys = [(m.device, m.stream, m.seq, m.kind, m.ts, self.now) for m in first.values()]
        new = self.store._insert_new_records(self.cur, sorted(keys))
        fresh = [msg for key, msg in first.items() if key in new]
        self.outcome.duplicates += len(records) - len(fresh)
        self.outcome.stored += len(fresh)
        self._write_typed(fresh)

    def _write_typed(self, records: list[Message]) -> None:
        json_in = self.store._json_in
        results: list[Row] = []
        telemetry: list[Row] = []
        channels: list[Row] = []
        logs: list[Row] = []
        acks: list[Row] = []
        staged_results: list[Row] = []
        staged_telemetry: list[StagedBatch] = []
        for msg in records:
            key = (msg.device, msg.stream, msg.seq, msg.ts)
            staged = isinstance(msg, self.staged_kinds)
            if isinstance(msg, PointResult):
                (staged_results if staged else results).append((
                    *key, msg.run_id, msg.point_id, msg.model, msg.family, msg.context_len, msg.precision,
                    msg.logits, msg.outcome, msg.error,
                    json_in({name: m.model_dump() for name, m in msg.metrics.items()}),
                    json_in(msg.implementation), json_in(msg.manifest), json_in(msg.details),
                ))  # fmt: skip
            elif isinstance(msg, TelemetryBatch):
                t = msg.timestamps().tolist()
                wall = (
                    (_int64(min(t) + msg.mono_to_wall_ns), _int64(max(t) + msg.mono_to_wall_ns))
                    if t
                    else (None, None)
                )
                row = (*key, msg.source, len(t), msg.mono_to_wall_ns, *wall, msg.t_ns)
                if staged:
                    named = [(name, c.unit, c.dtype, c.data) for name, c in msg.channels.items()]
                    staged_telemetry.append((row, named, newest_values(msg, t, self.now)))
                    continue
                telemetry.append(row)
                channels += [
                    (msg.device, msg.stream, msg.seq, name, c.unit, c.dtype, c.data)
                    for name, c in msg.channels.items()
                ]
                self.live.add(msg, t, self.now)
            elif isinstance(msg, Log):
                logs.append((*key, msg.level, msg.logger, msg.message))
            elif isinstance(msg, CommandAck):
                acks.append((*key, msg.command_id, msg.name, int(msg.accepted), msg.reason, msg.run_id))
            else:
                self._write_run(msg)
        for table, rows in (
            ("results", results),
            ("telemetry", telemetry),
            ("telemetry_channels", channels),
            ("logs", logs),
            ("command_acks", acks),
        ):
            insert_rows(self.store, self.cur, f"INSERT INTO {table}", rows)
        if self.store.stager is not None and (staged_telemetry or staged_results):
            self.store.stager.stage(self.cur, self.now, staged_telemetry, staged_results)

    def _write_run(self, msg: Message) -> None:
        """A run's row, made by whichever of its messages comes first and filled in by the others; one
        statement per message, in order, so a run's progress only moves forward."""
        if isinstance(msg, RunStarted):
            self.cur.execute(
                self._sql(
                    "INSERT INTO runs (device, run_id, plan, plan_hash, total_points, manifest, started_ts)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device, run_id) DO UPDATE SET"
                    " plan = excluded.plan, plan_hash = excluded.plan_hash,"
                    " total_points = excluded.total_points, manifest = excluded.manifest,"
                    " started_ts = excluded.started_ts"
                ),
                (msg.device, msg.run_id, self.store._json_in(msg.plan), msg.plan_hash, msg.total_points,
                 self.store._json_in(msg.manifest), msg.ts),
            )  # fmt: skip
        elif isinstance(msg, RunProgress):
            self.cur.execute(
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
            self.cur.execute(
                self._sql(
                    "INSERT INTO runs (device, run_id, outcome, points_ok, points_failed, error, finished_ts)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device, run_id) DO UPDATE SET"
                    " outcome = excluded.outcome, points_ok = excluded.points_ok,"
                    " points_failed = excluded.points_failed, error = excluded.error,"
                    " finished_ts = excluded.finished_ts"
                ),
                (msg.device, msg.run_id, msg.outcome, msg.points_ok, msg.points_failed, msg.error, msg.ts),
            )
        else:
            raise ValueError(f"a {msg.kind!r} message is not a record the collector stores")

    def _write_live(self) -> None:
        """Merge the batch's newest telemetry values into each device's `live` column: one read and
        one write of the batch's devices' rows, which the batch already updated (last_seen), so the
        upsert only updates. On PostgreSQL the read locks the rows: collectors sharing a
        subscription may merge at once."""
        for devices in chunks(sorted(self.live.by_device), ROWS_PER_STATEMENT):
            stored = self.store._stored_live(self.cur, devices)
            merged = {device: self.live.merged(stored.get(device) or {}, device) for device in devices}
            rows = [(d, self.now, self.now, self.store._json_in(live)) for d, live in merged.items()]
            head = "INSERT INTO devices (device, first_seen_ns, last_seen_ns, live)"
            tail = "ON CONFLICT (device) DO UPDATE SET live = excluded.live"
            insert_rows(self.store, self.cur, head, rows, tail)


def _newer_state(msg: Status | DeviceMeta, birth: int, stored: Any) -> bool:
    """Whether `msg` is at least as new as the stored status or meta of birth `birth`."""
    if not isinstance(stored, dict) or stored.get("stream") == msg.stream:
        return msg.birth >= birth
    return msg.ts >= int(stored.get("ts") or 0)
