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

    def _transaction(self) -> AbstractContextManager[Any]: ...

    def _sql(self, statement: str) -> str: ...

    def _query(self, statement: str, params: Sequence[Any] = ...) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    # Statements separated by ';'; column types that differ by backend are spelled {json}, {blob}, {bool}.
    ddl: str


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
            ddl = migration.ddl.format(json=store.json_type, blob=store.blob_type, bool=store.bool_type)
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
