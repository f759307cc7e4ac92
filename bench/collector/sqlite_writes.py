"""Benchmark: bytes the SQLite store writes per stored record, against what it grows by, by page size,
WAL auto-checkpoint interval and records per commit; the store alone (no broker, no collector).

`scale.py` measures the whole collector under a live fleet; this asks where the bytes go. The
fleet's messages (one telemetry batch per device per tick, a point result every tenth tick, from
`simfleet.py`) are written with `SQLiteStore.write_batch`, `--per-commit` records at a time (a
collector that keeps up with 1,000 devices commits about 4 at a time). Written bytes are this
process's `/proc/self/io` `write_bytes` after `os.sync()`, over the ticks (WAL appends and any
auto-checkpoints), then over one final `wal_checkpoint(TRUNCATE)`; growth is the database file's
size after that checkpoint against its size before the ticks, and the growth of its pages in use
(page count less free pages: the staging tables' freed pages are reused, so the file keeps their
high-water mark). `--merge-every` merges the staging tables every that many ticks (one tick stands for
one second of the fleet, so 60 is the collector's MERGE_INTERVAL_S), as a collector that runs for
hours does; without it the store merges once, after the ticks. Before that last merge, with what
the ticks left staged, five devices' pages are read as the dashboard reads them (newest telemetry,
results): `one_device_reads_ms`. `--wal-by-table` stops every checkpoint (the store's checkpoint thread
too) and, after the last merge, counts the WAL's frames by the table or index that owns each page at
the end (`dbstat`): `wal_bytes_per_record_by_table`, where the WAL half of the bytes goes (a page
freed by then counts as "(freed)").

    python bench/collector/sqlite_writes.py --page-size 4096 --autocheckpoint 1000 --per-commit 4
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import struct
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from simfleet import SIMULATED, SimDevice

from ctxscope.collector.store.base import Accepted
from ctxscope.collector.store.sqlite import SQLiteStore

# SQLite's WAL format: a 32-byte file header, then frames of a 24-byte header (the page number first)
# and the page.
WAL_HEADER_BYTES = 32
WAL_FRAME_HEADER_BYTES = 24


def written_bytes() -> int:
    """Bytes this process has caused to be written to storage (`/proc/self/io`)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError("/proc/self/io has no write_bytes")


def pages_in_use_bytes(store: SQLiteStore) -> int:
    conn = store._writer()
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    return int(pages - free) * int(conn.execute("PRAGMA page_size").fetchone()[0])


def one_device_reads_ms(store: SQLiteStore, names: list[str]) -> list[float]:
    """Wall time of each device's newest telemetry and its results, as its page asks for them, with what
    is staged at the end of the ticks still staged."""
    took = []
    for name in names:
        started = time.perf_counter()
        assert store.latest_telemetry(name, SIMULATED, "power_w", 60.0) is not None
        store.results(name)
        took.append((time.perf_counter() - started) * 1000)
    return took


def wal_bytes_by_table(store: SQLiteStore, wal: Path, records: int) -> dict[str, float]:
    """Bytes of WAL frames per record, by the table or index owning each frame's page now."""
    data = wal.read_bytes()
    page_size = struct.unpack(">I", data[8:12])[0]
    owner = dict(store._writer().execute("SELECT pageno, name FROM dbstat").fetchall())
    frames: Counter[str] = Counter()
    for offset in range(WAL_HEADER_BYTES, len(data) - page_size - WAL_FRAME_HEADER_BYTES + 1,
                        page_size + WAL_FRAME_HEADER_BYTES):  # fmt: skip
        (page,) = struct.unpack(">I", data[offset : offset + 4])
        frames[owner.get(page, "(freed)")] += 1
    frame_bytes = page_size + WAL_FRAME_HEADER_BYTES
    return {name: n * frame_bytes / records for name, n in frames.most_common()}


def run(
    page_size: int,
    autocheckpoint: int,
    per_commit: int,
    devices: int,
    ticks: int,
    merge_every: int = 0,
    wal_by_table: bool = False,
) -> dict[str, object]:
    folder = Path(tempfile.mkdtemp(prefix="sqlite-writes-"))
    db = folder / "store.sqlite"
    with sqlite3.connect(db) as conn:  # the page size holds only if set before the first table
        conn.execute(f"PRAGMA page_size={page_size}")
        conn.execute("PRAGMA journal_mode=WAL")
    store = SQLiteStore(db, merge_interval_s=1e9)  # merged here, every `merge_every` ticks
    store._writer().execute(f"PRAGMA wal_autocheckpoint={0 if wal_by_table else autocheckpoint}")
    if wal_by_table:  # no checkpoint at all: the WAL keeps every frame written
        store._closing.set()
        assert store._checkpointer is not None
        store._checkpointer.join()
    fleet = [SimDevice(f"dev-{i:05d}") for i in range(devices)]
    store.write_batch([Accepted("setup", m) for d in fleet for m in (d.meta(), d.status("busy", run_id="w"))])
    store._writer().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    os.sync()
    start_written, start_size, started = written_bytes(), db.stat().st_size, time.monotonic()
    start_used = pages_in_use_bytes(store)
    stored = 0
    batch: list[Accepted] = []
    for tick in range(ticks):
        for i, device in enumerate(fleet):
            batch.append(Accepted("t", device.telemetry(power_w=10 + tick % 20, temp_c=40 + tick % 10)))
            if (tick + i) % 10 == 0:
                n = 1024 * (1 + tick % 16)
                batch.append(
                    Accepted(
                        "r", device.result("w", "qwen2.5-0.5b", "transformer", n, 0.01 * n, 1000 + 0.3 * n)
                    )
                )
            if len(batch) >= per_commit:
                stored += store.write_batch(batch).stored
                batch = []
        if merge_every > 0 and (tick + 1) % merge_every == 0 and tick + 1 < ticks:
            store.merge_staged()
    if batch:
        stored += store.write_batch(batch).stored
    read_ms = one_device_reads_ms(store, [fleet[i * len(fleet) // 5].device for i in range(5)])
    store.merge_staged()  # what the store staged is merged, and counted
    by_table = wal_bytes_by_table(store, Path(f"{db}-wal"), stored) if wal_by_table else None
    os.sync()
    in_ticks = written_bytes() - start_written
    store._writer().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    os.sync()
    total = written_bytes() - start_written
    growth = db.stat().st_size - start_size
    used_growth = pages_in_use_bytes(store) - start_used
    store.close()
    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()
    return {
        "page_size_bytes": page_size,
        "wal_autocheckpoint_pages": autocheckpoint,
        "records_per_commit": per_commit,
        "devices": devices,
        "ticks": ticks,
        "merge_every_ticks": merge_every,
        "records_stored": stored,
        "written_per_record_kb": total / stored / 1024,
        "written_during_ticks_per_record_kb": in_ticks / stored / 1024,
        "written_by_final_checkpoint_per_record_kb": (total - in_ticks) / stored / 1024,
        "growth_per_record_kb": growth / stored / 1024,
        "written_over_growth": total / growth,
        "used_growth_per_record_kb": used_growth / stored / 1024,
        "written_over_used_growth": total / used_growth,
        "one_device_reads_ms": read_ms,
        "seconds": time.monotonic() - started,
        **({"wal_bytes_per_record_by_table": by_table} if by_table is not None else {}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--page-size", type=int, default=4096, help="bytes (SQLite's default 4096)")
    parser.add_argument(
        "--autocheckpoint", type=int, default=1000, help="WAL pages between checkpoints; <= 0: none"
    )
    parser.add_argument("--per-commit", type=int, default=4, help="records per transaction")
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--ticks", type=int, default=60, help="telemetry batches per device")
    parser.add_argument(
        "--merge-every", type=int, default=0, help="ticks between merges of the staging tables; 0: once, last"
    )
    parser.add_argument(
        "--wal-by-table", action="store_true", help="no checkpoints; the WAL's bytes by table, at the end"
    )
    args = parser.parse_args()
    sizes = (args.page_size, args.autocheckpoint, args.per_commit, args.devices, args.ticks)
    row = run(*sizes, merge_every=args.merge_every, wal_by_table=args.wal_by_table)
    json.dump(
        {"command": " ".join(["python", "bench/collector/sqlite_writes.py", *sys.argv[1:]]), **row},
        sys.stdout,
    )
    print()


if __name__ == "__main__":
    main()
