"""SQLite (WAL) outbox of encoded records: the agent's durable RecordSink.

The spool owns the stream identity: a random stream id created with the database and a `seq` that
keeps counting across restarts. Records wait here until the broker acknowledges them; an
acknowledged record is kept `keep_acked_s` longer, because a broker that crashes loses the queue
changes it made since its last autosave: after a lost connection the link replays what the broker
acknowledged in that window (`replay_since`), and the collector's idempotent key drops the
duplicates. The spool is bounded (acknowledged rows do not count): when full it drops the oldest
droppable records (telemetry, logs) and counts them; results and run records are never dropped,
the spool grows past its bound instead and reports back-pressure.

A board left alone for months meets cleaners: a spool file deleted (or replaced) under the running agent
would take every record in it with the next restart. The spool checks its file's identity at most every
FILE_CHECK_EVERY_S when it writes, and writes the database it still holds open back to its path.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from ctxscope.agent.config import AgentConfig
from ctxscope.shared.codec import MAX_MESSAGE_BYTES, encode
from ctxscope.shared.ids import new_stream_id, validate_device_id
from ctxscope.shared.messages import CHANNEL_OF_KIND, DROPPABLE_KINDS, STATE_KINDS, Envelope, Log
from ctxscope.shared.topics import topic_for

M = TypeVar("M", bound=Envelope)
PRUNE_EVERY_NS = 1_000_000_000  # acknowledged rows past keep_acked_s are deleted at most once a second
log = logging.getLogger(__name__)
# Droppable rows freed at least, when a full disk refuses a record that must not be lost.
FREE_ROWS_MIN = 100
FILE_CHECK_EVERY_S = 10.0  # how often (at most) a write checks that the file at the path is this spool

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool_state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    droppable INTEGER NOT NULL,
    size_bytes INTEGER NOT NULL,
    acked_ns INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_droppable ON outbox (droppable, seq);
"""
# Run after _SCHEMA: a spool made before acknowledged rows were kept gains the column first.
_PENDING_INDEX = "CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (acked_ns, seq)"


class RecordTooLarge(ValueError):
    """A record whose encoding exceeds the contract's message size; it is not spooled."""


class SpoolFull(OSError):
    """A droppable record (telemetry, a log line) that a full disk left no room for, even after the
    spool dropped its oldest droppable rows: it is lost, and counted in `stats().dropped`."""


class _ReopenFailed(Exception):
    """The spool was written back to its path, but opening it there failed: `cause` says why."""

    def __init__(self, cause: OSError | sqlite3.Error) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _disk_full(exc: sqlite3.OperationalError) -> bool:
    """SQLite's SQLITE_FULL (13); its error code is an attribute from Python 3.11, the text before."""
    return getattr(exc, "sqlite_errorcode", None) == 13 or str(exc) == "database or disk is full"


def _set_aside(path: Path) -> Path:
    """Rename a spool that cannot be read (and its WAL files) to `<name>.damaged-<UTC time>`."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.damaged-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        part = path.with_name(path.name + suffix)
        if part.exists():
            part.replace(target.with_name(target.name + suffix))
    return target


def file_identity(path: Path) -> tuple[int, int] | None:
    """The file's (device, inode), None where there is none; OSError where it cannot be told."""
    try:
        stat = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return stat.st_dev, stat.st_ino


@dataclass(frozen=True)
class SpooledRecord:
    seq: int
    kind: str
    topic: str
    payload: bytes


@dataclass(frozen=True)
class SpoolStats:
    backlog: int
    backlog_bytes: int
    high_water_seq: int
    dropped: int
    over_bound: bool


class Spool:
    """A thread-safe outbox for one device; `emit()` is the RecordSink entry point."""

    def __init__(
        self,
        path: Path,
        device: str,
        max_rows: int = 200_000,
        max_bytes: int = 512 * 1024**2,
        keep_acked_s: float = 120.0,
    ) -> None:
        self.device = validate_device_id(device)
        self.path = path
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.keep_acked_ns = int(keep_acked_s * 1e9)
        self._pruned_ns = 0
        self._checked_ns = time.monotonic_ns()
        # Droppable records a full disk lost: not in the file's own count, which could not be written.
        self._lost_to_full_disk = 0
        # The notice of a write-back whose reopening failed: the file holds every record, the database
        # is closed; every write tries to open it again first, and stores this notice once it has.
        self._reopen_notice: str | None = None
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        # Set when the file at `path` could not be read as a spool and was moved aside (see _open).
        self.set_aside: Path | None = None
        try:
            stored_device = self._open()
        except sqlite3.OperationalError:  # locked, unreadable, no room: the file may be sound
            raise
        except sqlite3.DatabaseError as exc:  # not a database, or a damaged one: a board must not stop
            self._db.close()
            self.set_aside = _set_aside(path)
            log.error(
                "spool %s could not be read (%s): moved aside to %s, its unsent records with it; a new"
                " spool starts a new stream", path, exc, self.set_aside,
            )  # fmt: skip
            stored_device = self._open()
        if stored_device != self.device:
            self._db.close()
            raise ValueError(f"spool {path} belongs to device {stored_device!r}, not {self.device!r}")
        self.stream = self._state("stream")
        self._count_backlog()
        if self.set_aside is not None:  # the collector hears of it in the new stream's first record
            self.emit(
                Log,
                level="error",
                message=f"the spool could not be read and was moved aside to {self.set_aside.name};"
                " records it held and had not sent are not in this stream",
            )

    def _open(self) -> str:
        """Connect to the file at `path`, create or upgrade its tables; the device it belongs to."""
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a process crash (SIGKILL); only power loss may lose the tail.
        self._db.execute("PRAGMA synchronous=NORMAL")
        with self._transaction():  # no lock: called while the object is made, or with the lock held
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(outbox)")}
            if "acked_ns" not in columns:
                self._db.execute("ALTER TABLE outbox ADD COLUMN acked_ns INTEGER")
            self._db.execute(_PENDING_INDEX)
            self._db.execute(
                "INSERT OR IGNORE INTO spool_state VALUES ('stream', ?), ('next_seq', '1'), ('birth', '0'),"
                " ('device', ?), ('dropped', '0')",
                (new_stream_id(), self.device),
            )
            device = self._state("device")
        self._file = file_identity(self.path)
        return device

    @classmethod
    def for_config(cls, config: AgentConfig) -> Spool:
        """The spool the agent's configuration describes (path, bounds, replay window)."""
        return cls(
            config.resolved_spool_path(),
            config.device,
            config.spool_max_rows,
            config.spool_max_bytes,
            config.replay_s,
        )

    # -- RecordSink -----------------------------------------------------------------------------

    def emit(self, message_cls: type[M], **fields: Any) -> M:
        """Stamp the envelope with the next seq, store the encoded record durably, return it."""
        kind = _kind_of(message_cls)
        if kind in STATE_KINDS:
            raise ValueError(f"{kind!r} is state, not a record: publish it with state_message()")
        topic = topic_for(self.device, CHANNEL_OF_KIND[kind])
        # A refusal's ack may be dropped like telemetry: the command did not run, and a sender that
        # floods refused commands must not grow the spool past its bound.
        droppable = kind in DROPPABLE_KINDS or (kind == "command_ack" and fields.get("accepted") is False)
        with self._lock:
            self._keep_file()
            try:
                return self._store(message_cls, kind, topic, droppable, fields)
            except sqlite3.OperationalError as exc:
                self._count_backlog()  # the transaction rolled back: drops and inserts did not happen
                # A full disk (or file) before the spool's own bound: any record is worth the room of
                # the oldest telemetry and of what the broker has acknowledged.
                if not _disk_full(exc) or not self._free_room():
                    return self._lost(kind, droppable, exc)
            except BaseException:
                self._count_backlog()
                raise
            try:
                return self._store(message_cls, kind, topic, droppable, fields)
            except sqlite3.OperationalError as exc:
                self._count_backlog()
                return self._lost(kind, droppable, exc)
            except BaseException:
                self._count_backlog()
                raise

    def _lost(self, kind: str, droppable: bool, exc: sqlite3.OperationalError) -> NoReturn:
        """Raise for a record the spool could not store: a droppable one on a full disk is counted as
        dropped (SpoolFull); anything else raises the database's error to its producer."""
        if droppable and _disk_full(exc):
            self._lost_to_full_disk += 1
            raise SpoolFull(f"the disk is full: a {kind} record was dropped ({exc})") from exc
        raise exc

    def _store(
        self, message_cls: type[M], kind: str, topic: str, droppable: bool, fields: dict[str, Any]
    ) -> M:
        with self._transaction():
            seq = int(self._state("next_seq"))
            record = message_cls(device=self.device, stream=self.stream, seq=seq, ts=time.time_ns(), **fields)
            payload = encode(record)
            if len(payload) > MAX_MESSAGE_BYTES:  # the collector would reject it: tell the producer now
                raise RecordTooLarge(f"a {kind} record of {len(payload)} bytes exceeds {MAX_MESSAGE_BYTES}")
            self._set_state("next_seq", seq + 1)
            if self._make_room(len(payload), droppable):
                self._db.execute(
                    "INSERT INTO outbox VALUES (?, ?, ?, ?, ?, ?, NULL)",
                    (seq, kind, topic, payload, int(droppable), len(payload)),
                )
                self._rows += 1
                self._bytes += len(payload)
            else:
                self._count_drops(1)
        return record

    def state_message(self, message_cls: type[M], **fields: Any) -> M:
        """A state message (meta, status): not spooled; its seq is the stream's high-water mark."""
        with self._lock:
            seq = int(self._state("next_seq")) - 1
        return message_cls(device=self.device, stream=self.stream, seq=seq, ts=time.time_ns(), **fields)

    # -- forwarding -----------------------------------------------------------------------------

    def oldest(self, n: int, after_seq: int = 0) -> list[SpooledRecord]:
        """Up to `n` records not yet acknowledged, oldest first, with seq above `after_seq`."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, kind, topic, payload FROM outbox WHERE acked_ns IS NULL AND seq > ?"
                " ORDER BY seq LIMIT ?",
                (after_seq, n),
            ).fetchall()
        return [SpooledRecord(int(s), k, t, bytes(p)) for s, k, t, p in rows]

    def ack(self, seq: int) -> None:
        """Mark a record the broker has acknowledged (no-op if it is already acknowledged or gone).

        It leaves the backlog now and the database `keep_acked_s` later."""
        now = time.time_ns()
        with self._lock:
            self._keep_file()
            row = self._db.execute(
                "UPDATE outbox SET acked_ns = ? WHERE seq = ? AND acked_ns IS NULL RETURNING size_bytes",
                (now, seq),
            ).fetchone()
            if row is not None:
                self._rows -= 1
                self._bytes -= int(row[0])
            if now - self._pruned_ns >= PRUNE_EVERY_NS:
                self._pruned_ns = now
                # Also rows acknowledged "in the future": the wall clock was ahead then and has been set
                # back since; waiting for their time would keep them for as long as it was ahead.
                self._db.execute(
                    "DELETE FROM outbox WHERE acked_ns IS NOT NULL AND (acked_ns < ? OR acked_ns > ?)",
                    (now - self.keep_acked_ns, now + self.keep_acked_ns),
                )

    def replay_since(self, since_ns: int) -> int:
        """Make records acknowledged at or after `since_ns` (wall clock) pending again; how many.

        Called after a lost connection: what the broker acknowledged shortly before it went away may
        have died with it (queued for the collector, not yet autosaved). Not records acknowledged
        after now: the clock was ahead when they were, and they are no recent acknowledgement."""
        with self._lock, self._transaction():
            replayed = self._db.execute(
                "UPDATE outbox SET acked_ns = NULL WHERE acked_ns BETWEEN ? AND ?",
                (since_ns, time.time_ns()),
            ).rowcount
            self._count_backlog()
        return int(replayed)

    def backlog(self) -> int:
        with self._lock:
            return self._rows

    def high_water_seq(self) -> int:
        """The last seq handed out (0 before the first record)."""
        with self._lock:
            return int(self._state("next_seq")) - 1

    def next_birth(self) -> int:
        """Count one more connection and return its birth number (persisted)."""
        with self._lock, self._transaction():
            birth = int(self._state("birth")) + 1
            self._set_state("birth", birth)
        return birth

    def stats(self) -> SpoolStats:
        with self._lock:
            return SpoolStats(
                backlog=self._rows,
                backlog_bytes=self._bytes,
                high_water_seq=int(self._state("next_seq")) - 1,
                dropped=int(self._state("dropped")) + self._lost_to_full_disk,
                over_bound=self._exceeds(0, 0),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- internals (callers hold the lock) ------------------------------------------------------

    def _exceeds(self, extra_rows: int, extra_bytes: int) -> bool:
        return self._rows + extra_rows > self.max_rows or self._bytes + extra_bytes > self.max_bytes

    def _make_room(self, size: int, droppable: bool) -> bool:
        """Drop oldest droppable rows until a record of `size` fits; False: drop the new one instead."""
        while self._exceeds(1, size):
            row = self._db.execute(
                "DELETE FROM outbox WHERE seq = "
                "(SELECT seq FROM outbox WHERE droppable = 1 AND acked_ns IS NULL ORDER BY seq LIMIT 1)"
                " RETURNING size_bytes"
            ).fetchone()
            if row is None:
                if droppable:
                    return False
                if not self._exceeds(0, 0):  # warn once, when the bound is first crossed
                    log.warning(
                        "spool %s is full of undroppable records (%d rows, %d bytes): growing past its bound",
                        self.path,
                        self._rows,
                        self._bytes,
                    )
                return True
            self._rows -= 1
            self._bytes -= int(row[0])
            self._count_drops(1)
        return True

    def _keep_file(self) -> None:
        """At most every FILE_CHECK_EVERY_S: if the file at `path` is no longer this database (deleted,
        its folder removed, or another file put there), write the database back to `path`. After a
        write-back whose reopening failed, on every call: open the written-back file again."""
        if self._reopen_notice is not None:
            self._reopen()
            return
        now = time.monotonic_ns()
        if now - self._checked_ns < FILE_CHECK_EVERY_S * 1e9:
            return
        self._checked_ns = now
        try:
            found = file_identity(self.path)
        except OSError as exc:  # e.g. the folder's permissions changed: the open file still takes writes
            log.warning("spool %s: cannot check its file (%s)", self.path, exc)
            return
        if found == self._file:
            return
        restored = "the spool file {} while the agent ran: written back from the open database".format(
            "was replaced" if found is not None else "was deleted"
        )
        try:
            foreign = self._write_back(found is not None)
        except (OSError, sqlite3.Error) as exc:  # tried again at the next check; the open file holds all
            log.error("spool %s: its file is gone and could not be written back (%s)", self.path, exc)
            return
        except _ReopenFailed as failed:
            self._reopen_notice = restored
            log.error("spool %s: written back, but not opened again (%s)", self.path, failed.cause)
            raise failed.cause from None
        moved = f"; the file found there was moved to {foreign.name}" if foreign else ""
        self._notice(f"{restored}{moved}")

    def _reopen(self) -> None:
        """Open the written-back file again (raises what opening it raises); then store the notice."""
        with contextlib.suppress(sqlite3.Error):
            self._db.close()  # a connection that a failed open may have left behind
        try:
            self._open()
            self._count_backlog()
        except (OSError, sqlite3.Error) as exc:
            log.error("spool %s: the written-back file still cannot be opened (%s)", self.path, exc)
            raise
        message, self._reopen_notice = self._reopen_notice, None
        self._notice(f"{message}; opening it again failed at first, records meanwhile were refused")

    def _notice(self, message: str) -> None:
        """An error log record in the stream (best effort: a spool that cannot store it logs it only)."""
        log.error("spool %s: %s", self.path, message)
        kind = _kind_of(Log)
        fields = {"level": "error", "logger": __name__, "message": message}
        try:
            self._store(Log, kind, topic_for(self.device, CHANNEL_OF_KIND[kind]), True, fields)
        except sqlite3.OperationalError as exc:
            log.error("spool %s: the log record of its restoration could not be stored (%s)", self.path, exc)

    def _write_back(self, replaced: bool) -> Path | None:
        """Copy the open database to `path` and reopen it there; where another file had been put, it is
        moved aside first: its new name."""
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every row in the open main file, WAL empty
        self.path.parent.mkdir(parents=True, exist_ok=True)
        copy = self.path.with_name(self.path.name + ".restoring")
        copy.unlink(missing_ok=True)
        target = sqlite3.connect(copy)
        try:
            self._db.backup(target)
        finally:
            target.close()
        foreign = None
        if replaced:
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            foreign = self.path.with_name(f"{self.path.name}.foreign-{stamp}")
            self.path.replace(foreign)
        os.replace(copy, self.path)  # from here the records are at the path, whatever fails next
        self._file = file_identity(self.path)  # so that a failure below never takes this copy for foreign
        self._db.close()
        try:
            for suffix in ("-wal", "-shm"):  # the old database's, emptied above; the copy must not read them
                self.path.with_name(self.path.name + suffix).unlink(missing_ok=True)
            self._open()
            self._count_backlog()
        except (OSError, sqlite3.Error) as exc:
            raise _ReopenFailed(exc) from exc
        return foreign

    def _count_backlog(self) -> None:
        row = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(size_bytes), 0) FROM outbox WHERE acked_ns IS NULL"
        ).fetchone()
        self._rows, self._bytes = int(row[0]), int(row[1])

    def _free_room(self) -> bool:
        """On a full disk: delete the acknowledged rows and the oldest tenth of the droppable pending
        ones (at least FREE_ROWS_MIN, counted as dropped), then shrink the WAL; whether any row went."""
        try:
            with self._transaction():
                gone = self._db.execute("DELETE FROM outbox WHERE acked_ns IS NOT NULL").rowcount
                (pending,) = self._db.execute(
                    "SELECT COUNT(*) FROM outbox WHERE droppable = 1 AND acked_ns IS NULL"
                ).fetchone()
                dropped = self._db.execute(
                    "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE droppable = 1 AND"
                    " acked_ns IS NULL ORDER BY seq LIMIT ?)",
                    (max(FREE_ROWS_MIN, int(pending) // 10),),
                ).rowcount
                self._count_drops(dropped)
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.OperationalError as exc:
            log.error("spool %s: no room could be made on the full disk: %s", self.path, exc)
            return False
        finally:
            self._count_backlog()
        if gone + dropped:
            log.warning(
                "spool %s: the disk is full; dropped the %d oldest telemetry and log records and %d"
                " acknowledged ones to keep a record that must not be lost", self.path, dropped, gone,
            )  # fmt: skip
        return bool(gone + dropped)

    def _count_drops(self, n: int) -> None:
        self._set_state("dropped", int(self._state("dropped")) + n)

    def _state(self, key: str) -> str:
        return str(self._db.execute("SELECT value FROM spool_state WHERE key = ?", (key,)).fetchone()[0])

    def _set_state(self, key: str, value: int) -> None:
        self._db.execute("UPDATE spool_state SET value = ? WHERE key = ?", (str(value), key))

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on error (the connection runs in autocommit mode)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self._db.execute("COMMIT")
        elif self._db.in_transaction:  # SQLite rolls back by itself on some errors (a full disk)
            self._db.execute("ROLLBACK")


def _kind_of(message_cls: type[Envelope]) -> str:
    kind = message_cls.model_fields["kind"].default
    if kind not in CHANNEL_OF_KIND:
        raise ValueError(f"{message_cls.__name__} has no known kind")
    return str(kind)
