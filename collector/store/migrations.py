"""Schema migrations: a versioned table in the store, applied in order when the store opens.

`SCHEMA` (base.py) is the baseline, version 1: the schema of the first release, created with
`IF NOT EXISTS`. Every later change is a numbered migration here, never an edit of the baseline, so
a store made by any release upgrades by running the migrations it has not recorded. Each migration
runs in one transaction with its row in `schema_migrations`; on PostgreSQL, where several
collectors may open one store at once, the transaction first takes an advisory lock, so exactly one
of them applies it. The baseline and the `schema_migrations` table are made under the same lock:
PostgreSQL's `CREATE TABLE IF NOT EXISTS` is not safe against a concurrent one (the loser fails on
a unique index of the catalog). A store newer than this code (a version it does not know) is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol


class Store(Protocol):
    """What a migration needs of a store (base.Store provides it; base imports this module)."""

    placeholder: str
    json_type: str
    blob_type: str
    bool_type: str
    key_type: str
    devices_room_ddl: str
    without_rowid: str
    minute_summaries_ddl: str

    def _transaction(self) -> AbstractContextManager[Any]: ...

    def _sql(self, statement: str) -> str: ...

    def _query(self, statement: str, params: Sequence[Any] = ...) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    # Statements separated by ';'; column types that differ by backend are spelled {json}, {blob}, {bool},
    # {key} (an arrival-ordered integer key: SQLite's rowid); {without_rowid} ends a table kept as its
    # primary key's B-tree alone (SQLite's WITHOUT ROWID; PostgreSQL has no such choice).
    ddl: str


# Migration 4 (see staging.py): tables keyed by arrival (`id`, in the order rows are staged) and views
# that every reader queries instead of the device-keyed tables, so staged rows are seen before and after
# their merge, never twice: a merge moves device ranges in transactions of their own, and while it
# runs `staging_merged` says which staged rows are merged already (ids up to `merging` of devices up
# to `merged_to`), which the `*_left` views leave out.
STAGING_DDL = """
CREATE TABLE IF NOT EXISTS staged_telemetry (
    id {key} PRIMARY KEY, device TEXT NOT NULL, stream TEXT NOT NULL, seq BIGINT NOT NULL,
    ts BIGINT NOT NULL, received_ns BIGINT NOT NULL, live {json} NOT NULL, source TEXT NOT NULL,
    n BIGINT NOT NULL, mono_to_wall_ns BIGINT NOT NULL, wall_start_ns BIGINT, wall_end_ns BIGINT,
    t_ns {blob} NOT NULL);
CREATE TABLE IF NOT EXISTS staged_channels (
    id BIGINT NOT NULL, channel TEXT NOT NULL, unit TEXT NOT NULL, dtype TEXT NOT NULL,
    data {blob} NOT NULL, PRIMARY KEY (id, channel));
CREATE TABLE IF NOT EXISTS staged_results (
    id {key} PRIMARY KEY, device TEXT NOT NULL, stream TEXT NOT NULL, seq BIGINT NOT NULL,
    ts BIGINT NOT NULL, received_ns BIGINT NOT NULL, run_id TEXT NOT NULL, point_id TEXT NOT NULL,
    model TEXT NOT NULL, family TEXT NOT NULL, context_len BIGINT NOT NULL, precision TEXT NOT NULL,
    logits TEXT NOT NULL, outcome TEXT NOT NULL, error TEXT, metrics {json} NOT NULL,
    implementation {json} NOT NULL, manifest {json} NOT NULL, details {json} NOT NULL);
CREATE TABLE IF NOT EXISTS staging_merged (
    one BIGINT PRIMARY KEY, through BIGINT NOT NULL, merging BIGINT, merged_to TEXT);
INSERT INTO staging_merged VALUES (1, 0, NULL, NULL);
CREATE VIEW staged_telemetry_left AS
    SELECT s.* FROM staged_telemetry s, staging_merged m
    WHERE m.merged_to IS NULL OR s.id > m.merging OR s.device > m.merged_to;
CREATE VIEW staged_results_left AS
    SELECT s.* FROM staged_results s, staging_merged m
    WHERE m.merged_to IS NULL OR s.id > m.merging OR s.device > m.merged_to;
CREATE VIEW all_records AS
    SELECT device, stream, seq, kind, ts, received_ns FROM records
    UNION ALL SELECT device, stream, seq, 'telemetry', ts, received_ns FROM staged_telemetry_left
    UNION ALL SELECT device, stream, seq, 'result', ts, received_ns FROM staged_results_left;
CREATE VIEW all_telemetry AS
    SELECT device, stream, seq, source, wall_end_ns FROM telemetry
    UNION ALL SELECT device, stream, seq, source, wall_end_ns FROM staged_telemetry_left;
CREATE VIEW telemetry_series AS
    SELECT t.device, t.source, t.mono_to_wall_ns, t.wall_start_ns, t.wall_end_ns, t.t_ns, c.channel,
    c.unit, c.dtype, c.data FROM telemetry t
    JOIN telemetry_channels c ON c.device = t.device AND c.stream = t.stream AND c.seq = t.seq;
CREATE VIEW all_telemetry_series AS
    SELECT * FROM telemetry_series
    UNION ALL SELECT t.device, t.source, t.mono_to_wall_ns, t.wall_start_ns, t.wall_end_ns, t.t_ns,
    c.channel, c.unit, c.dtype, c.data FROM staged_telemetry_left t JOIN staged_channels c ON c.id = t.id;
CREATE VIEW all_results AS
    SELECT device, stream, seq, ts, run_id, point_id, model, family, context_len, precision, logits,
    outcome, error, metrics, implementation, manifest, details FROM results
    UNION ALL SELECT device, stream, seq, ts, run_id, point_id, model, family, context_len, precision,
    logits, outcome, error, metrics, implementation, manifest, details FROM staged_results_left
"""

# Migration 6 (see staging.py): a merge no longer moves telemetry. A batch stays where it was staged,
# in arrival order (`telemetry_log`, `telemetry_log_channels`), and the merge adds it to a per-device
# index instead (`telemetry_index`, keyed by device: written once a merge for all of a device's batches;
# retention finds old batches through it too, so the log needs no index by time). The device-keyed
# `telemetry` and `telemetry_channels` keep what earlier versions merged, and what a store that stages
# nothing (PostgreSQL) writes; the views read both. The log's channel rows are kept in their key's
# B-tree alone (SQLite: a table and its key's index would be two trees written per row). The unmerged
# rows are those after `staging_merged.through`, found by id (scalar subqueries, not a join, so that
# SQLite reads them as a range of the log's key and never scans the whole log).
TELEMETRY_LOG_DDL = """
DROP VIEW all_telemetry_series;
DROP VIEW telemetry_series;
DROP VIEW all_telemetry;
DROP VIEW all_records;
DROP VIEW staged_telemetry_left;
ALTER TABLE staged_telemetry RENAME TO telemetry_log;
CREATE TABLE IF NOT EXISTS telemetry_log_channels (
    id BIGINT NOT NULL, channel TEXT NOT NULL, unit TEXT NOT NULL, dtype TEXT NOT NULL,
    data {blob} NOT NULL, PRIMARY KEY (id, channel)) {without_rowid};
INSERT INTO telemetry_log_channels SELECT id, channel, unit, dtype, data FROM staged_channels;
DROP TABLE staged_channels;
CREATE TABLE IF NOT EXISTS telemetry_index (
    device TEXT NOT NULL, id BIGINT NOT NULL, source TEXT NOT NULL, wall_end_ns BIGINT,
    PRIMARY KEY (device, id)) {without_rowid};
CREATE INDEX IF NOT EXISTS telemetry_index_by_time ON telemetry_index (device, source, wall_end_ns);
CREATE VIEW telemetry_log_unmerged AS
    SELECT * FROM telemetry_log
    WHERE id > (SELECT through FROM staging_merged)
    AND ((SELECT merged_to FROM staging_merged) IS NULL
    OR id > (SELECT merging FROM staging_merged) OR device > (SELECT merged_to FROM staging_merged));
CREATE VIEW all_records AS
    SELECT device, stream, seq, kind, ts, received_ns FROM records
    UNION ALL SELECT device, stream, seq, 'telemetry', ts, received_ns FROM telemetry_log_unmerged
    UNION ALL SELECT device, stream, seq, 'result', ts, received_ns FROM staged_results_left;
CREATE VIEW merged_telemetry AS
    SELECT device, stream, seq, source, wall_end_ns FROM telemetry
    UNION ALL SELECT i.device, s.stream, s.seq, i.source, i.wall_end_ns
    FROM telemetry_index i JOIN telemetry_log s ON s.id = i.id;
CREATE VIEW all_telemetry AS
    SELECT * FROM merged_telemetry
    UNION ALL SELECT device, stream, seq, source, wall_end_ns FROM telemetry_log_unmerged;
CREATE VIEW telemetry_series AS
    SELECT t.device, t.source, t.mono_to_wall_ns, t.wall_start_ns, t.wall_end_ns, t.t_ns, c.channel,
    c.unit, c.dtype, c.data FROM telemetry t
    JOIN telemetry_channels c ON c.device = t.device AND c.stream = t.stream AND c.seq = t.seq
    UNION ALL SELECT i.device, i.source, s.mono_to_wall_ns, s.wall_start_ns, i.wall_end_ns, s.t_ns,
    c.channel, c.unit, c.dtype, c.data FROM telemetry_index i JOIN telemetry_log s ON s.id = i.id
    JOIN telemetry_log_channels c ON c.id = i.id;
CREATE VIEW all_telemetry_series AS
    SELECT * FROM telemetry_series
    UNION ALL SELECT t.device, t.source, t.mono_to_wall_ns, t.wall_start_ns, t.wall_end_ns, t.t_ns,
    c.channel, c.unit, c.dtype, c.data FROM telemetry_log_unmerged t
    JOIN telemetry_log_channels c ON c.id = t.id
"""

# Migration 7 (see retention.py): a pruned telemetry batch's key row in `records` goes with its samples,
# and the seqs its stream stored are kept as ranges instead: every seq in [lo, hi] of the stream was
# stored, `pruned` of them by batches retention has removed, the rest still keyed in `records`. A
# redelivered batch whose seq lies in a range and has no key row was pruned, and is a duplicate. Without
# it the keys of raw telemetry, one row a batch, grew the store for as long as it ran.
PRUNED_KEYS_DDL = """
CREATE TABLE IF NOT EXISTS pruned_keys (
    device TEXT NOT NULL, stream TEXT NOT NULL, lo BIGINT NOT NULL, hi BIGINT NOT NULL,
    pruned BIGINT NOT NULL, PRIMARY KEY (device, stream, lo)) {without_rowid}
"""

MIGRATIONS = (
    Migration(1, "baseline: the schema of the first release", ""),
    Migration(
        2,
        "telemetry rollups, kept after raw telemetry ages out (retention policy)",
        """
        CREATE TABLE IF NOT EXISTS telemetry_rollups (
            device TEXT NOT NULL, source TEXT NOT NULL, channel TEXT NOT NULL, unit TEXT NOT NULL,
            bucket_ns BIGINT NOT NULL, bucket_s BIGINT NOT NULL, n BIGINT NOT NULL,
            mean DOUBLE PRECISION NOT NULL, min DOUBLE PRECISION NOT NULL, max DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (device, source, channel, bucket_ns));
        CREATE INDEX IF NOT EXISTS telemetry_by_age ON telemetry (wall_end_ns)
        """,
    ),
    Migration(
        3,
        "devices.live: the newest value of each telemetry channel, kept with the device for the fleet view",
        "ALTER TABLE devices ADD COLUMN live {json}",
    ),
    Migration(
        4,
        "staging: telemetry and results kept in arrival order until merged into the device-keyed tables",
        STAGING_DDL,
    ),
    Migration(
        5,
        "devices: room on each page for the versions a commit makes of its rows (PostgreSQL fillfactor)",
        "{devices_room}",
    ),
    Migration(
        6,
        "telemetry stays in arrival order once merged, found through a per-device index",
        TELEMETRY_LOG_DDL,
    ),
    Migration(
        7,
        "pruned telemetry keys: retention drops a batch's key row and keeps its stream's seqs as ranges",
        PRUNED_KEYS_DDL,
    ),
    Migration(
        8,
        "telemetry rollups by width and age: retention finds the rollups to fold into coarse ones",
        "CREATE INDEX IF NOT EXISTS telemetry_rollups_by_width ON telemetry_rollups (bucket_s, bucket_ns)",
    ),
    Migration(
        9,
        "minute summaries of the raw telemetry window, kept as batches merge (SQLite; minutes.py)",
        "{minute_summaries}",
    ),
)
LATEST = MIGRATIONS[-1].version
# An arbitrary constant naming ctxscope's migration lock among PostgreSQL advisory locks.
PG_LOCK_KEY = 0x63747873


class SchemaTooNew(RuntimeError):
    """The store was migrated by a newer ctxscope than this one."""


TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_ns BIGINT NOT NULL)"
)


def applied_versions(store: Store) -> list[int]:
    return [int(r["version"]) for r in store._query("SELECT version FROM schema_migrations ORDER BY version")]


def hold_migration_lock(store: Store, cur: Any) -> None:
    """On PostgreSQL, hold the migration lock until the transaction of `cur` ends (SQLite has one
    writer at a time already)."""
    if store.placeholder == "%s":
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (PG_LOCK_KEY,))


def migrate(store: Store, now_ns: int) -> list[int]:
    """Apply the migrations the store has not recorded; return the versions applied now."""
    with store._transaction() as cur:
        hold_migration_lock(store, cur)
        cur.execute(TABLE)
    done: list[int] = []
    for migration in MIGRATIONS:
        with store._transaction() as cur:
            hold_migration_lock(store, cur)
            cur.execute("SELECT MAX(version) FROM schema_migrations")
            current = _first(cur.fetchone()) or 0
            if current > LATEST:
                raise SchemaTooNew(
                    f"the store is at schema version {current}; this ctxscope knows versions up to"
                    f" {LATEST}: upgrade ctxscope"
                )
            if current >= migration.version:
                continue
            ddl = migration.ddl.format(
                json=store.json_type,
                blob=store.blob_type,
                bool=store.bool_type,
                key=store.key_type,
                devices_room=store.devices_room_ddl,
                without_rowid=store.without_rowid,
                minute_summaries=store.minute_summaries_ddl,
            )
            for statement in ddl.split(";"):
                if statement.strip():
                    cur.execute(statement)
            cur.execute(
                store._sql("INSERT INTO schema_migrations VALUES (?, ?, ?)"),
                (migration.version, migration.name, now_ns),
            )
            done.append(migration.version)
    return done


def _first(row: Any) -> int | None:
    return None if row is None or row[0] is None else int(row[0])
