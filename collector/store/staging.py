"""Staging (SQLite store): telemetry batches and point results are written in arrival order first, and
merged later, sorted, a range of devices at a time: results move into the device-keyed `results`
table; a telemetry batch stays where it was staged and the merge adds it to a per-device index.

Why: a telemetry record kept in tables keyed by device (the `records`, `telemetry` and
`telemetry_channels` keys, `telemetry_by_time`) and in its device's row dirties, with one record per
device per second, some four 4 KB pages of its own in every commit, which SQLite's WAL writes whole
and the checkpoint writes again: 33-54 KB written per 0.7 KB stored (results/collector/scale/README.md).
Staged rows go to tables keyed by an id that grows with arrival, so the records of a commit share the
tables' last pages; a merge then writes each device's many staged records at once, dirtying each of
its leaf pages once for all of them. Telemetry is not moved (migration 6): moving it wrote every batch
twice more (the staged copy's checkpoint, then the merged copy in the WAL and at its checkpoint),
while its key row in `records` and its entry in `telemetry_index` (device, id, source, newest sample
time) are some 100 bytes. Readers find a device's merged batches through that index
(`merged_telemetry`, `telemetry_series`) and the unmerged ones, those after `staging_merged.through`,
by id (`telemetry_log_unmerged`); retention deletes a batch from the log, its channels, its index
entry and its key row (pruned_keys.py keeps its seq).

Exactly once: a record is staged only if its key is neither in `records`, nor pruned, nor staged. The staged
keys are held in memory (`StagedKeys`): exact because SQLite has one writer at a time (BEGIN IMMEDIATE),
and each write transaction first reads what another process staged or merged since. Ids only grow
(`staging_merged.through` keeps the highest merged one), which is also what lets readers follow the
staging tables incrementally (`overlay.py`). Staged rows are committed data: they survive a crash and
are merged at the next open or cycle. A merge takes every staged record, one range of devices a
transaction (the store pauses between them, so ingest's commits go on); `staging_merged` notes how
far it got, so a merge that a kill stopped is carried on, and the views that readers query leave out
of the unmerged rows (`telemetry_log_unmerged`, `staged_results_left`) what it merged: a reader sees
each record once, before, during and after its merge. The staged ids of each device are listed once
per merge in SQLite's temporary store (the staging tables have no index by device: that index would
cost the page per record that staging avoids).
"""

from __future__ import annotations

import json
from typing import Any

from ctxscope.collector.store.minutes import summarize_merged
from ctxscope.collector.store.writes import (
    LIVE_AHEAD_NS,
    RecordKey,
    Row,
    StagedBatch,
    Store,
    insert_rows,
    merge_live,
)

# The tables staged rows are written to: telemetry stays in its table once merged (migration 6), results
# move to the device-keyed `results` table.
STAGED_TABLES = ("telemetry_log", "staged_results")
# `writes.live_order` as one SQL value: a batch whose newest sample is dated more than LIVE_AHEAD_NS
# past its arrival ranks below every batch that is not (its time mapped below -2^61), then by time.
_LIVE_ORDER = (
    f"CASE WHEN wall_end_ns > received_ns + {LIVE_AHEAD_NS} THEN wall_end_ns / 4 - 4611686018427387904"
    " ELSE wall_end_ns END"
)


class StagedKeys:
    """The keys of the staged records, with their ids; `sync` at the start of every write transaction
    and `commit` after it, so a transaction that rolls back leaves nothing behind."""

    def __init__(self) -> None:
        self.ids: dict[RecordKey, int] = {}
        self.newest = 0  # the highest id committed (staged or merged)
        self.through = 0  # the highest id merged
        self._pending: dict[RecordKey, int] = {}

    def sync(self, cur: Any) -> None:
        """Catch up with the store: another process may have staged or merged since (a second writer
        such as an import); reads nothing but two index probes when none did."""
        self._pending = {}
        cur.execute("SELECT through FROM staging_merged")
        (through,) = cur.fetchone()
        if through > self.through:
            self.merged(int(through))
        for table in STAGED_TABLES:
            cur.execute(f"SELECT id, device, stream, seq FROM {table} WHERE id > ?", (self.newest,))
            for id_, device, stream, seq in cur.fetchall():
                self.ids[(device, stream, int(seq))] = int(id_)
                self.newest = max(self.newest, int(id_))

    def __contains__(self, key: RecordKey) -> bool:
        return key in self.ids or key in self._pending

    def assign(self, key: RecordKey) -> int:
        id_ = self.newest + len(self._pending) + 1
        self._pending[key] = id_
        return id_

    def commit(self) -> None:
        """The transaction that staged the pending keys has committed."""
        if self._pending:
            self.ids.update(self._pending)
            self.newest = max(self._pending.values())
            self._pending = {}

    def merged(self, through: int) -> None:
        """Every id up to `through` is merged: those keys are in `records` now."""
        self.ids = {key: id_ for key, id_ in self.ids.items() if id_ > through}
        self.through = through
        self.newest = max(self.newest, through)


class Staging:
    """The stager of a SQLite store: writes staged rows and merges them (inside the store's write
    transactions, whose cursor each method is given)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.keys = StagedKeys()

    def stage(self, cur: Any, now_ns: int, telemetry: list[StagedBatch], results: list[Row]) -> None:
        """Stage new records (their keys already checked against `records` and the staged ones)."""
        json_in = self.store._json_in
        staged_telemetry, channels, staged_results = [], [], []
        for row, named, live in telemetry:
            id_ = self.keys.assign((row[0], row[1], int(row[2])))
            staged_telemetry.append((id_, *row[:4], now_ns, json_in(live), *row[4:]))
            channels += [(id_, *channel) for channel in named]
        for row in results:
            id_ = self.keys.assign((row[0], row[1], int(row[2])))
            staged_results.append((id_, *row[:4], now_ns, *row[4:]))
        for table, rows in (
            ("telemetry_log", staged_telemetry),
            ("telemetry_log_channels", channels),
            ("staged_results", staged_results),
        ):
            insert_rows(self.store, cur, f"INSERT INTO {table}", rows)

    def plan(self, cur: Any) -> tuple[int, list[str], bool] | None:
        """The merge to run: the ids it moves (up to `through`), the devices left to move, in order,
        and whether it is one that a crash or kill stopped, carried on; else it is one of every staged
        record, noted in `staging_merged` (`merging`). None when nothing is staged."""
        cur.execute("SELECT through, merging, merged_to FROM staging_merged")
        through, merging, merged_to = cur.fetchone()
        resumed = merging is not None
        if not resumed:
            if self.keys.newest <= through:
                return None
            merging = self.keys.newest
            cur.execute("UPDATE staging_merged SET merging = ?", (merging,))
        # The staged ids by device, for the merge's device ranges: in the connection's temporary store
        # (no WAL, no checkpoint), since the staging tables themselves have no index by device.
        cur.execute("DROP TABLE IF EXISTS temp.merging")
        cur.execute(
            "CREATE TEMP TABLE merging AS SELECT id, device FROM telemetry_log WHERE id > ? AND id <= ?"
            " UNION ALL SELECT id, device FROM staged_results WHERE id <= ?",
            (through, merging, merging),
        )
        cur.execute("CREATE INDEX temp.merging_by_device ON merging (device, id)")
        cur.execute("SELECT DISTINCT device FROM temp.merging ORDER BY device")
        left = [device for (device,) in cur.fetchall() if merged_to is None or device > merged_to]
        return int(merging), left, resumed

    def merge_range(self, cur: Any, through: int, first: str, last: str) -> int:
        """Merge the staged records of devices `first`..`last` with ids up to `through`, sorted by key
        (their keys into `records`, telemetry into `telemetry_index`, results into `results`), and note
        it; the number merged (0 if another merge of the same store merged them already)."""
        cur.execute("SELECT merging, merged_to FROM staging_merged")
        merging, merged_to = cur.fetchone()
        if merging != through or (merged_to is not None and merged_to >= last):
            return 0
        where = "id IN (SELECT id FROM temp.merging WHERE device >= ? AND device <= ?)"
        span = (first, last)
        cur.execute(
            "INSERT INTO records SELECT device, stream, seq, 'telemetry', ts, received_ns"
            f" FROM telemetry_log WHERE {where} UNION ALL SELECT device, stream, seq, 'result', ts,"
            f" received_ns FROM staged_results WHERE {where} ORDER BY 1, 2, 3",
            span * 2,
        )
        moved = int(cur.rowcount)
        cur.execute(
            "INSERT INTO telemetry_index SELECT device, id, source, wall_end_ns FROM telemetry_log"
            f" WHERE {where} ORDER BY device, id",
            span,
        )
        summarize_merged(cur, first, last)
        cur.execute(
            "INSERT INTO results SELECT device, stream, seq, ts, run_id, point_id, model, family,"
            " context_len, precision, logits, outcome, error, metrics, implementation, manifest, details"
            f" FROM staged_results WHERE {where} ORDER BY device, stream, seq",
            span,
        )
        self._merge_devices(cur, where, span)
        cur.execute("UPDATE staging_merged SET merged_to = ?", (last,))
        return moved

    def finish(self, cur: Any, through: int) -> None:
        """Drop the merged results and record the merge's end (readers' views then stop leaving rows
        out; merged telemetry stays where it is, found through `telemetry_index`)."""
        cur.execute("SELECT through FROM staging_merged")
        if cur.fetchone()[0] >= through:
            return
        cur.execute("SELECT MAX(id) FROM staged_results")
        (newest,) = cur.fetchone()
        if newest is not None and newest > through:
            cur.execute("DELETE FROM staged_results WHERE id <= ?", (through,))
        else:  # every row goes: without a WHERE, SQLite frees the pages without reading the rows
            cur.execute("DELETE FROM staged_results")
        cur.execute("UPDATE staging_merged SET through = ?, merging = NULL, merged_to = NULL", (through,))
        cur.execute("DROP TABLE IF EXISTS temp.merging")

    def _merge_devices(self, cur: Any, where: str, span: tuple[Any, ...]) -> None:
        """The devices' newest arrival and newest values into their rows. Of each source's staged
        batches, the one with the newest sample holds that source's newest values (SQLite takes the
        bare `live` column from the row where MAX finds its value), in `writes.live_order`'s order. The
        source's entry is found by key (`json_each`), not by a JSON path built from its name: a path
        misses names with a quote, and names that `live`'s text holds escaped (any non-ASCII
        character)."""
        cur.execute(
            "SELECT device, json_group_object(source,"
            " json((SELECT value FROM json_each(live) WHERE key = source)))"
            f" FROM (SELECT device, source, live, MAX({_LIVE_ORDER}) FROM telemetry_log"
            f" WHERE {where} AND wall_end_ns IS NOT NULL GROUP BY device, source) GROUP BY device"
            " ORDER BY device",
            span,
        )
        newest = {device: json.loads(text) for device, text in cur.fetchall()}
        if newest:
            stored = self.store._stored_live(cur, sorted(newest))
            rows = [
                (device, 0, 0, self.store._json_in(merge_live(stored.get(device) or {}, live)))
                for device, live in newest.items()
            ]
            insert_rows(self.store, cur, "INSERT INTO devices (device, first_seen_ns, last_seen_ns, live)",
                        rows, "ON CONFLICT (device) DO UPDATE SET live = excluded.live")  # fmt: skip
        cur.execute(
            "SELECT device, MAX(received_ns) FROM (SELECT device, received_ns FROM telemetry_log"
            f" WHERE {where} UNION ALL SELECT device, received_ns FROM staged_results WHERE {where})"
            " GROUP BY device ORDER BY device",
            span * 2,
        )
        seen = [(device, received, received) for device, received in cur.fetchall()]
        insert_rows(self.store, cur, "INSERT INTO devices (device, first_seen_ns, last_seen_ns)", seen,
                    "ON CONFLICT (device) DO UPDATE SET"
                    " last_seen_ns = MAX(devices.last_seen_ns, excluded.last_seen_ns)")  # fmt: skip
