"""SQLite store (WAL): one writer connection owned by the ingest thread, one reader for views, and a
thread of its own that copies the WAL into the database (checkpoints). Opened read-only (a process
that only answers views beside a collector), it has the reader alone.

SQLite's default runs a checkpoint inside the commit that grows the WAL past 1,000 pages: the writer
then waits for the copy and its fsync. At 3,000 devices that was a fifth of the writer's time
(results/collector/scale/README.md). Here a checkpointer thread runs a PASSIVE checkpoint every
second on its own connection, which never blocks the writer; the writer checkpoints only if the WAL
passes WRITER_CHECKPOINT_PAGES, that is, if the checkpointer has fallen far behind.

Telemetry batches and point results are staged (written in arrival order) and a thread of their own
merges them every MERGE_INTERVAL_S (results into the device-keyed tables; telemetry stays in arrival
order, indexed by device), and the store merges at open what a previous run left staged (`staging.py`).
"""

from __future__ import annotations

import functools
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ctxscope.collector.store.base import Store, StoreOpenError, StoreReadOnlyError
from ctxscope.collector.store.history import TelemetryHistory
from ctxscope.collector.store.minutes import DDL as MINUTES_DDL
from ctxscope.collector.store.minutes import prune_summaries, read_summarized_history
from ctxscope.collector.store.pruned_keys import pruned_among
from ctxscope.collector.store.staging import Staging
from ctxscope.collector.store.writes import (
    ROWS_PER_STATEMENT,
    STAGED_KINDS,
    Accepted,
    BatchOutcome,
    BatchWrite,
    RecordKey,
    Rejected,
    chunks,
    insert_rows,
)
from ctxscope.ratelog import RateLimitedLog

log = logging.getLogger(__name__)
CHECKPOINT_INTERVAL_S = 1.0
# Seconds between merges of the staging tables: each device's key and index pages are dirtied once per
# merge, so longer is fewer bytes written per record, and slower reads of one device's page (they scan
# what is not merged), more staged keys held in memory, a longer pause of the writer while one runs. At
# 120 s the collector under a live fleet wrote 2.2-2.8x what its store grew by (3.0-3.6x by the store
# alone, with 10-30 minutes of history, which costs more as it grows), and a device page at 3,000
# devices read in under 0.1 s (results/collector/scale/README.md).
MERGE_INTERVAL_S = 120.0
# Devices a merge transaction moves (and summarizes, minutes.py): ingest waits while one runs. With
# the minute summaries, 500 devices a transaction doubled ingest's lag in the windows of a merge at
# 1,000 devices (p99 0.55 -> 1.39 s); 200 brought it back (0.64 s; results/collector/scale/README.md).
MERGE_DEVICES = 200
STAGED_KIND_NAMES = frozenset(kind.model_fields["kind"].default for kind in STAGED_KINDS)
WRITER_CHECKPOINT_PAGES = 16384  # 64 MiB of 4 KiB pages


class SQLiteStore(Store):
    # SQLite's default limit on bound parameters: 32,766 since 3.32, 999 before.
    max_params = 32766 if sqlite3.sqlite_version_info >= (3, 32) else 999

    stager: Staging
    commit_gather_s = 0.2
    without_rowid = "WITHOUT ROWID"
    minute_summaries_ddl = MINUTES_DDL

    def __init__(
        self, path: Path, *, read_only: bool = False, merge_interval_s: float = MERGE_INTERVAL_S
    ) -> None:
        super().__init__()
        self.path = path
        self.read_only = read_only
        self.merge_interval_s = merge_interval_s
        self._closing = threading.Event()
        self._checkpointer: threading.Thread | None = None
        self._merger: threading.Thread | None = None
        self.stager = Staging(self)
        self._merge_lock = threading.Lock()
        if read_only:
            self._open_reader_only()
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._write_conn = self._connect()
            # FULL: a batch is acknowledged to the broker only after commit, so the commit must be durable.
            self._write_conn.execute("PRAGMA synchronous=FULL")
            # FAST: deleted content is zeroed only where that costs no page write. Some builds (Debian's)
            # turn secure_delete on, and then a delete writes every page it touches again: removing a
            # merge's staged rows cost 516 bytes a row in the WAL, then as much again at the checkpoint.
            self._write_conn.execute("PRAGMA secure_delete=FAST")
            # A merge's sorts and its list of staged ids by device are transient: kept off the disk.
            self._write_conn.execute("PRAGMA temp_store=MEMORY")
            self._create_schema()
            self._write_conn.execute(f"PRAGMA wal_autocheckpoint={WRITER_CHECKPOINT_PAGES}")
            self._read_conn = self._connect()
            self._checkpoint_conn = self._connect()
            self._checkpoint_conn.execute("PRAGMA synchronous=FULL")
        except (sqlite3.Error, OSError) as exc:
            raise StoreOpenError(f"cannot open the SQLite store {path}: {exc}") from exc
        self._merge_left_staged()
        self._checkpointer = threading.Thread(
            target=self._checkpoint_loop, name="ctxscope-sqlite-checkpoint", daemon=True
        )
        self._merger = threading.Thread(target=self._merge_loop, name="ctxscope-sqlite-merge", daemon=True)
        self._checkpointer.start()
        self._merger.start()

    def _open_reader_only(self) -> None:
        """The reader alone, refusing writes (`query_only`), over a store a collector created."""
        if not self.path.is_file():
            raise StoreOpenError(f"cannot open the SQLite store {self.path} read-only: no such file")
        try:
            self._read_conn = self._connect()  # the store is in WAL mode already: that pragma writes nothing
            self._read_conn.execute("PRAGMA query_only=ON")
            self._require_current_schema()
        except sqlite3.Error as exc:
            raise StoreOpenError(f"cannot open the SQLite store {self.path} read-only: {exc}") from exc

    def _merge_left_staged(self) -> None:
        """Merge what a previous run staged and did not merge (a crash, a kill). A store that cannot
        be read fails the open; any other failure of the merge does not: the staged records are
        committed, readers see them, and the merge thread tries again."""
        try:
            self.merge_staged()
        except (sqlite3.Error, OSError) as exc:
            raise StoreOpenError(f"cannot open the SQLite store {self.path}: {exc}") from exc
        except Exception as exc:
            log.error(
                "merging the records staged in %s failed at open (%s: %s); they stay staged and readable,"
                " and the merge is tried again every %g s",
                self.path, type(exc).__name__, exc, self.merge_interval_s,
            )  # fmt: skip

    def _checkpoint_loop(self) -> None:
        """Checkpoint every CHECKPOINT_INTERVAL_S until the store closes; a failed checkpoint is
        logged (rate-limited) and tried again, never the end of the thread (the writer's own
        checkpoint is the backstop)."""
        errors = RateLimitedLog(log)
        while not self._closing.wait(CHECKPOINT_INTERVAL_S):
            try:
                self._checkpoint_conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except Exception as exc:
                errors.warning("checkpoint", "SQLite checkpoint of %s failed: %s", self.path, exc)

    def _merge_loop(self) -> None:
        """Merge the staging tables every `merge_interval_s` until the store closes; a failed merge is
        logged (rate-limited) and tried again: the staged rows are committed and readers see them."""
        errors = RateLimitedLog(log)
        while not self._closing.wait(self.merge_interval_s):
            try:
                self.merge_staged()
            except Exception as exc:
                errors.warning("merge", "merging the staged records of %s failed: %s", self.path, exc)

    def write_batch(
        self, items: Sequence[Accepted | Rejected], received_ns: int | None = None
    ) -> BatchOutcome:
        with self._transaction(committed=self.stager.keys.commit) as cur:
            self.stager.keys.sync(cur)
            return BatchWrite(self, cur, received_ns).run(items)

    def merge_staged(self) -> int:
        """Merge every staged record now (staging.py), MERGE_DEVICES devices a transaction, with a
        pause as long after each, so ingest's commits go on between them; first the rest of a merge
        that a crash or kill stopped. The number merged. Its outcome is the store's upkeep of task
        "merge"."""
        try:
            moved = self._merge_all_staged()
        except Exception as exc:
            self.upkeep.failed("merge", exc)
            raise
        self.upkeep.succeeded("merge")
        return moved

    def _merge_all_staged(self) -> int:
        keys, moved = self.stager.keys, 0
        with self._merge_lock:
            while True:
                with self._transaction() as cur:
                    keys.sync(cur)
                    plan = self.stager.plan(cur)
                if plan is None:
                    return moved
                through, devices, resumed = plan
                for start in range(0, len(devices), MERGE_DEVICES):
                    span = devices[start : start + MERGE_DEVICES]
                    began = time.monotonic()
                    with self._transaction() as cur:
                        moved += self.stager.merge_range(cur, through, span[0], span[-1])
                    # the lock is no queue: give ingest's writer at least as long as this range took
                    self._closing.wait(time.monotonic() - began)
                with self._transaction(committed=functools.partial(keys.merged, through)) as cur:
                    self.stager.finish(cur, through)
                if not resumed:
                    return moved

    def telemetry_history(
        self, device: str, source: str, channel: str, since_ns: int, until_ns: int, max_points: int
    ) -> TelemetryHistory:
        """One channel's history (base), the whole minutes of its span that are summarized read from
        their summaries (minutes.py), in one read transaction; a span without any reads every batch."""
        series, _ = self._telemetry_views(device)
        with self._reader_apart() as conn:
            conn.execute("BEGIN")
            try:
                found = read_summarized_history(
                    lambda statement, params: conn.execute(statement, tuple(params)).fetchall(),
                    (device, source, channel),
                    since_ns,
                    until_ns,
                    max_points,
                    with_unmerged=series == "all_telemetry_series",
                )
            finally:
                conn.execute("ROLLBACK")
        if found is not None:
            return found
        return super().telemetry_history(device, source, channel, since_ns, until_ns, max_points)

    def _telemetry_pruned(self, cur: Any, pruned: dict[tuple[str, str], tuple[int, set[str]]]) -> None:
        prune_summaries(cur, pruned)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        return conn

    @contextmanager
    def _reader_apart(self) -> Iterator[sqlite3.Connection]:
        conn = self._connect()
        try:
            conn.execute("PRAGMA query_only=ON")
            yield conn
        finally:
            conn.close()

    def _writer(self) -> sqlite3.Connection:
        if self.read_only:
            raise StoreReadOnlyError(f"the SQLite store {self.path} was opened read-only")
        return self._write_conn

    def _reader(self) -> sqlite3.Connection:
        return self._read_conn

    def _begin(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")

    def _insert_new_records(self, cur: Any, rows: list[tuple[Any, ...]]) -> set[RecordKey]:
        """The keys already stored (kept, or pruned: pruned_keys.py) are looked up first, then the new
        rows inserted: BEGIN IMMEDIATE makes this transaction the store's only writer, so no key can
        appear in between. (RETURNING, which PostgreSQL's path uses, needs SQLite 3.35; this works on
        the SQLite of older hosts.)"""
        stored: set[RecordKey] = set()
        for chunk in chunks(sorted({row[:3] for row in rows}), ROWS_PER_STATEMENT):
            values = ", ".join(["(?, ?, ?)"] * len(chunk))
            # The keys drive the join (CROSS JOIN keeps them outer): one primary-key search each. A
            # row-value `IN (VALUES ...)` would scan the whole table.
            cur.execute(
                f"SELECT r.device, r.stream, r.seq FROM (VALUES {values}) AS k CROSS JOIN records AS r"
                " ON r.device = k.column1 AND r.stream = k.column2 AND r.seq = k.column3",
                [value for key in chunk for value in key],
            )
            stored.update((device, stream, int(seq)) for device, stream, seq in cur.fetchall())
        # a key in a pruned range with no key row was a telemetry batch retention has removed
        stored |= pruned_among(self, cur, {row[:3] for row in rows} - stored)
        new: dict[RecordKey, tuple[Any, ...]] = {}
        for row in rows:
            key = (row[0], row[1], int(row[2]))
            if key not in stored and key not in new and key not in self.stager.keys:
                new[key] = row
        # staged kinds get their key row when they are merged (staging.py)
        direct = [row for row in new.values() if row[3] not in STAGED_KIND_NAMES]
        insert_rows(self, cur, "INSERT INTO records", direct)
        return set(new)

    def _stored_live(self, cur: Any, devices: Sequence[str]) -> dict[str, Any]:
        """One row for all of `devices` (a JSON object of their live columns): Python's sqlite3
        releases the interpreter's lock at every row it steps (see writes.py)."""
        marks = ", ".join("?" * len(devices))
        cur.execute(
            f"SELECT json_group_object(device, json(live)) FROM devices WHERE device IN ({marks})"
            " AND live IS NOT NULL",
            list(devices),
        )
        (text,) = cur.fetchone()
        return dict(json.loads(text)) if text else {}

    def close(self) -> None:
        self._closing.set()
        for thread in (self._checkpointer, self._merger):
            if thread is not None:
                thread.join()
        with self._write_lock, self._read_lock:
            if not self.read_only:
                self._checkpoint_conn.close()
                self._write_conn.close()
            self._read_conn.close()

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"
