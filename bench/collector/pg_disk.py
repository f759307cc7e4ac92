"""PostgreSQL helpers for the collector benchmarks: a fresh schema for one run, and what the server
wrote to disk over a measured window.

Disk counters (PostgreSQL 15 has no `pg_stat_io`), all cluster-wide:
- WAL: `pg_current_wal_lsn()` difference (bytes of WAL generated, page headers included), with
  `pg_stat_wal` (records, full-page images, bytes, writes and syncs of WAL) for the split, and
  `pg_stat_database.xact_commit` (every database) for the commits;
- data pages: `pg_stat_bgwriter` `buffers_checkpoint + buffers_clean + buffers_backend`, times
  `block_size`: shared buffers written out by the checkpointer, the background writer and backends;
  in PostgreSQL 15 `buffers_backend` also counts every relation extension (the zero-filled page a
  backend appends to a table or index file before filling it in shared buffers);
- cross-check: the sum of `/proc/<pid>/io` `write_bytes` of every `postgres` process (the postmaster's
  count includes the children it has reaped), which the kernel charges when a page-cache page is
  first dirtied; it needs root (or the server's user) to read.
- the block device(s) under the store: sectors written (`/sys/dev/block/M:m/stat`), whole machine
  (optionally after an `os.sync()`): what reached the device, journal included, whoever wrote it.
`checkpoint()` forces a checkpoint and waits until the checkpointer has reported its statistics, so a
snapshot taken right after it counts the data pages dirtied before it as already written.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import psycopg

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
PAGE_WRITE_COUNTERS = ("buffers_checkpoint", "buffers_clean", "buffers_backend")


@dataclass(frozen=True)
class FreshSchema:
    admin: psycopg.Connection[Any]  # autocommit, on the server's default search path
    schema: str
    store_url: str  # the collector's store URL: the server, search path set to the schema


@contextmanager
def fresh_schema(dsn: str = DEFAULT_DSN, prefix: str = "ctxscope_bench") -> Iterator[FreshSchema]:
    """A new, empty schema on the server for one run; dropped (with everything in it) afterwards."""
    schema = f"{prefix}_{secrets.token_hex(4)}"
    admin = psycopg.connect(dsn, autocommit=True)
    try:
        admin.execute(f"CREATE SCHEMA {schema}")
        try:
            yield FreshSchema(admin, schema, f"{dsn}?options=-csearch_path%3D{schema}")
        finally:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")
    finally:
        admin.close()


@dataclass(frozen=True)
class DiskSnapshot:
    """The server's write counters at one moment (see the module's docstring)."""

    monotonic_s: float
    wal_lsn: str
    wal_records: int
    wal_fpi: int
    wal_bytes: int
    wal_write: int
    wal_sync: int
    commits: int
    pages_written: dict[str, int]  # PAGE_WRITE_COUNTERS
    block_size: int
    proc_write_bytes: int  # every postgres process, /proc/<pid>/io write_bytes
    postgres_processes: int
    store_bytes: int  # pg_total_relation_size of the schema's tables (indexes and TOAST included)


def lsn_bytes(lsn: str) -> int:
    """A WAL position as printed by the server (`16/B374D848`) in bytes from the start of WAL."""
    high, low = lsn.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def disk_delta(before: DiskSnapshot, after: DiskSnapshot) -> dict[str, Any]:
    """What the server wrote between two snapshots, in bytes, and what the schema grew by."""
    pages = {name: after.pages_written[name] - before.pages_written[name] for name in PAGE_WRITE_COUNTERS}
    wal = lsn_bytes(after.wal_lsn) - lsn_bytes(before.wal_lsn)
    data = sum(pages.values()) * after.block_size
    return {
        "seconds": after.monotonic_s - before.monotonic_s,
        "wal_lsn": [before.wal_lsn, after.wal_lsn],
        "wal_bytes": wal,
        "wal_records": after.wal_records - before.wal_records,
        "wal_full_page_images": after.wal_fpi - before.wal_fpi,
        "wal_bytes_pg_stat_wal": after.wal_bytes - before.wal_bytes,
        "wal_writes": after.wal_write - before.wal_write,
        "wal_syncs": after.wal_sync - before.wal_sync,
        "commits": after.commits - before.commits,
        "data_pages_written": pages,
        "data_page_bytes": data,
        "wal_plus_data_bytes": wal + data,
        "proc_write_bytes": after.proc_write_bytes - before.proc_write_bytes,
        "store_growth_bytes": after.store_bytes - before.store_bytes,
    }


def stat_written_bytes(stat_line: str) -> int:
    """Bytes written, from a block device's `stat` line (field 7: sectors written, 512 bytes each)."""
    return int(stat_line.split()[6]) * 512


def block_devices(paths: Iterable[str | Path]) -> list[Path]:
    """The `stat` files of the distinct block devices holding `paths` (none for tmpfs, overlay...)."""
    found: dict[int, Path] = {}
    for path in paths:
        dev = os.stat(Path(path).resolve()).st_dev
        stat = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}/stat")
        if stat.exists():
            found[dev] = stat
    return list(found.values())


def device_written_bytes(stats: list[Path], sync: bool) -> int:
    """The bytes written so far to the devices of `block_devices`, after syncing every file system."""
    if sync:
        os.sync()
    return sum(stat_written_bytes(stat.read_text()) for stat in stats)


def data_directory(conn: psycopg.Connection[Any]) -> list[str]:
    """The server's data directory and its WAL directory (a link where WAL lives elsewhere)."""
    (data,) = _one(conn, "SELECT current_setting('data_directory')")
    return [data, os.path.join(data, "pg_wal")]


def postgres_write_bytes() -> tuple[int, int]:
    """The summed `/proc/<pid>/io` write_bytes of every `postgres` process, and how many there were."""
    total = count = 0
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] != "postgres":
            continue
        try:
            total += proc.io_counters().write_bytes
            count += 1
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total, count


def _one(conn: psycopg.Connection[Any], sql: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...]:
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return tuple(row)


def checkpoint(conn: psycopg.Connection[Any], timeout_s: float = 30.0) -> None:
    """CHECKPOINT, then wait until the checkpointer has published its counters for it."""
    conn.execute("SELECT pg_stat_clear_snapshot()")
    (requested,) = _one(conn, "SELECT checkpoints_req FROM pg_stat_bgwriter")
    conn.execute("CHECKPOINT")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        if _one(conn, "SELECT checkpoints_req FROM pg_stat_bgwriter")[0] > requested:
            return
        time.sleep(0.05)
    raise TimeoutError("the checkpointer did not report the checkpoint's statistics")


def snapshot(conn: psycopg.Connection[Any], schema: str) -> DiskSnapshot:
    """Read the counters on `conn` (autocommit); the schema's size is that of its ordinary tables."""
    conn.execute("SELECT pg_stat_clear_snapshot()")
    proc_bytes, processes = postgres_write_bytes()
    lsn, block_size = _one(conn, "SELECT pg_current_wal_lsn()::text, current_setting('block_size')::int")
    wal = _one(conn, "SELECT wal_records, wal_fpi, wal_bytes, wal_write, wal_sync FROM pg_stat_wal")
    (commits,) = _one(conn, "SELECT SUM(xact_commit)::bigint FROM pg_stat_database")
    pages = _one(conn, f"SELECT {', '.join(PAGE_WRITE_COUNTERS)} FROM pg_stat_bgwriter")
    (store,) = _one(
        conn,
        "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind = 'r'",
        (schema,),
    )
    return DiskSnapshot(
        monotonic_s=time.monotonic(),
        wal_lsn=lsn,
        wal_records=int(wal[0]),
        wal_fpi=int(wal[1]),
        wal_bytes=int(wal[2]),
        wal_write=int(wal[3]),
        wal_sync=int(wal[4]),
        commits=int(commits),
        pages_written=dict(zip(PAGE_WRITE_COUNTERS, map(int, pages), strict=True)),
        block_size=int(block_size),
        proc_write_bytes=proc_bytes,
        postgres_processes=processes,
        store_bytes=int(store),
    )


def settings(conn: psycopg.Connection[Any]) -> dict[str, str]:
    """The server settings that decide how much it writes."""
    names = (
        "server_version", "full_page_writes", "synchronous_commit", "wal_compression", "wal_level",
        "fsync", "checkpoint_timeout", "max_wal_size", "shared_buffers", "block_size", "wal_block_size",
        "autovacuum", "wal_log_hints", "data_checksums",
    )  # fmt: skip
    return {name: str(_one(conn, "SELECT current_setting(%s)", (name,))[0]) for name in names}
