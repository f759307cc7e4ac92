"""The telemetry rollups table: a bucket merged into it, read back, and old buckets folded into wider
ones.

Retention (retention.py) folds raw telemetry into `rollup_s` buckets (60 s by default). Kept at that
width they would grow a store for as long as it runs: an agent's 17 channels (NVML and host) make
24,480 rows a device a day, about 2.9 MB in SQLite (117 bytes a row), 1 GB a device a year.
`coarsen` folds the buckets older than a cutoff into `coarse_s` buckets (an hour by default: 408 rows a
device a day, about 17 MB a year). As in the first fold, counts add, means weight by count, and the
minimum and maximum stay exact. Each chunk is one transaction, so a crash leaves a chunk either folded
or untouched. A narrow bucket that arrives later for an hour already folded (a device's late backlog)
merges into that hour's bucket at the next pass, or at once where it starts the hour.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ctxscope.collector.store.base import Store
from ctxscope.collector.store.buckets import Bucket
from ctxscope.collector.store.history import rollup_series

NS_PER_S = 1_000_000_000
CHUNK_ROWS = 5000
# An arbitrary constant naming the coarsening lock among PostgreSQL advisory locks (the migration lock
# is 0x63747873).
PG_COARSEN_LOCK_KEY = 0x63747874

# Merge one bucket into the table: counts add, means weight by count, min and max stay exact. The row
# already there keeps its width (a narrow bucket that starts a folded hour joins the hour).
UPSERT = (
    "INSERT INTO telemetry_rollups VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (device, source, channel, bucket_ns) DO UPDATE SET"
    " mean = (telemetry_rollups.mean * telemetry_rollups.n + excluded.mean * excluded.n)"
    " / (telemetry_rollups.n + excluded.n),"
    " n = telemetry_rollups.n + excluded.n,"
    " min = CASE WHEN excluded.min < telemetry_rollups.min THEN excluded.min ELSE telemetry_rollups.min END,"
    " max = CASE WHEN excluded.max > telemetry_rollups.max THEN excluded.max ELSE telemetry_rollups.max END"
)


def write_buckets(
    store: Store, cur: Any, buckets: dict[tuple[str, str, str, int], Bucket], width_s: int
) -> None:
    """Merge buckets into the table in key order: two passes on one PostgreSQL store (two collectors)
    that write some of the same buckets then wait for each other in one order, never in a cycle."""
    upsert = store._sql(UPSERT)
    for (device, source, channel, start), bucket in sorted(buckets.items()):
        cur.execute(upsert, bucket.row((device, source, channel), start, width_s))


def rollups(store: Store, device: str, channel: str | None = None) -> list[dict[str, Any]]:
    """A device's rollups (of one channel, or all), oldest first."""
    where, params = (
        ("device = ?", [device]) if channel is None else ("device = ? AND channel = ?", [device, channel])
    )
    return store._query(f"SELECT * FROM telemetry_rollups WHERE {where} ORDER BY channel, bucket_ns", params)


def rollup_channels(store: Store, device: str) -> list[str]:
    """The channels a device has rollups of, by index searches (`rollup_series`), not a scan of its
    rollups."""
    return sorted({channel for _, channel, _ in rollup_series(store._query, device)})


def _narrower_widths(store: Store, coarse_s: int) -> Iterator[int]:
    """Each bucket width in the table narrower than `coarse_s`, by one index search a width (a store
    holds one or two: the retention policy's, and an earlier one where it was changed)."""
    width = 0
    while True:
        rows = store._query(
            "SELECT MIN(bucket_s) AS w FROM telemetry_rollups WHERE bucket_s > ? AND bucket_s < ?",
            (width, coarse_s),
        )
        if rows[0]["w"] is None:
            return
        width = int(rows[0]["w"])
        yield width


def coarsen(store: Store, cutoff_ns: int, coarse_s: int) -> tuple[int, int]:
    """Fold the buckets narrower than `coarse_s` that start before `cutoff_ns` (rounded down to a
    whole coarse bucket, so that none is folded in part) into `coarse_s` buckets; return how many rows
    were folded and how many coarse buckets written. On PostgreSQL several collectors may fold one
    store at once: a chunk first takes an advisory lock, so chunks run one at a time. (Locking rows and
    skipping those another pass holds, as raw pruning does, deadlocked here: two passes held some of
    the same hours' rows, and each waited on the other's deleted rows to write an hour.)"""
    width_ns = coarse_s * NS_PER_S
    cutoff = cutoff_ns // width_ns * width_ns
    folded = written = 0
    for narrow in _narrower_widths(store, coarse_s):
        while True:
            with store._transaction() as cur:
                if store.placeholder == "%s":
                    cur.execute("SELECT pg_advisory_xact_lock(%s)", (PG_COARSEN_LOCK_KEY,))
                cur.execute(
                    store._sql(
                        "SELECT device, source, channel, unit, bucket_ns, n, mean, min, max"
                        " FROM telemetry_rollups WHERE bucket_s = ? AND bucket_ns < ?"
                        f" ORDER BY bucket_ns LIMIT {CHUNK_ROWS}"
                    ),
                    (narrow, cutoff),
                )
                rows = cur.fetchall()
                if not rows:
                    break
                buckets: dict[tuple[str, str, str, int], Bucket] = {}
                delete = store._sql(
                    "DELETE FROM telemetry_rollups WHERE device = ? AND source = ? AND channel = ?"
                    " AND bucket_ns = ?"
                )
                for device, source, channel, unit, bucket_ns, n, mean, low, high in rows:
                    key = (device, source, channel, bucket_ns // width_ns * width_ns)
                    bucket = buckets.setdefault(key, Bucket(unit, 0, 0.0, low, high))
                    bucket.add(n, mean * n, low, high)
                    cur.execute(delete, (device, source, channel, bucket_ns))
                # Rows go before their hour's bucket is written: an hour's first narrow bucket has
                # the hour's key, and in bucket order it is in the first chunk that holds the hour.
                write_buckets(store, cur, buckets, coarse_s)
            folded += len(rows)
            written += len(buckets)
    return folded, written
