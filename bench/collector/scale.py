"""Benchmark: one collector under a fleet of N simulated devices, on this machine's cores.

Starts a private mosquitto, the collector (ingest + store + dashboard, `collector_proc.py`; the store is
SQLite in a scratch folder, or with `--store postgres` a fresh schema on the `--pg-dsn` server)
in its own process, and the load (`scale_load.py`: one telemetry batch a second per device, a point
result every ten seconds) in another. After a warm-up it measures, over `--duration` seconds:
- ingest lag: stored time minus the record's publish time (`records.received_ns - ts`, from the
  store), p50 / p99 / max, in seconds, of every record published in the window;
- throughput: records stored per second against records published per second;
- `/api/fleet` response time with the whole fleet, one request every 0.5 s, p50 / p95 in ms;
- the collector process's resident memory (max, and each minute's last sample) and bytes written to
  disk (`/proc` io counters) per stored record, against what the store grew by per record (database +
  WAL files); on PostgreSQL what the server wrote (WAL bytes from `pg_current_wal_lsn()` plus data
  pages written from `pg_stat_bgwriter`, with a CHECKPOINT at the window's start and end; `/proc` io
  of every `postgres` process as a cross-check, see `pg_disk.py`) against the schema's tables' growth
  (`pg_total_relation_size`), and the server's idle write rate in the 10 s before the run (the server
  may be shared: the counters are cluster-wide);
- for both stores, the bytes written to the store's block device (whole machine) over the same span,
  and of those the broker's (its persistence file, re-saved every second with any queued backlog);
- collector CPU (psutil, 100% = one core), and once a second the messages waiting in its inbox (taken
  from the broker, not yet stored: `/api/ingest`), which tells a collector that is behind from a
  broker that is slow to deliver; lag p99 per 10 s of the window, which tells a backlog that drains
  from one that holds or grows.
Values are synthetic (labelled `simulated`); every process shares the same cores.

    python bench/collector/scale.py --devices 3000 --duration 60 --out results/collector/scale-3000.json
    python bench/collector/scale.py --devices 3000 --store postgres --out results/collector/scale/pg-3000.json
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import psycopg
from bench_live import percentiles, slice_p99
from pg_disk import (
    DEFAULT_DSN,
    block_devices,
    checkpoint,
    data_directory,
    device_written_bytes,
    disk_delta,
    fresh_schema,
    settings,
    snapshot,
)

from ctxscope.broker import MosquittoBroker

HERE = Path(__file__).resolve().parent


IDLE_S = 10.0  # PostgreSQL: the server's writes are watched this long before the run starts


def store_bytes(db: Path) -> int:
    return sum(p.stat().st_size for p in db.parent.glob(db.name + "*") if p.is_file())


def used_bytes(db: Path) -> int:
    """The pages a SQLite store's tables and indexes use (its size less its free pages), as committed,
    WAL included: what the data grew by, where the files also keep the high-water mark of emptied
    staging tables (free pages) and of a WAL that a long merge transaction grew."""
    if not db.is_file():
        return 0
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as conn:
        names = ("page_count", "freelist_count", "page_size")
        pages, free, size = (conn.execute(f"PRAGMA {name}").fetchone()[0] for name in names)
    return int((pages - free) * size)


def count_records(conn: psycopg.Connection[Any], schema: str) -> int:
    row = conn.execute(f"SELECT COUNT(*) FROM {schema}.records").fetchone()
    assert row is not None
    return int(row[0])


def stored_and_staged(reader: Any) -> tuple[int, int]:
    """Records stored (merged or staged) and records still staged, by a store with staging tables
    (schema 6, `collector/store/staging.py`); (records, 0) by one without."""
    try:
        row = reader.execute(
            "SELECT (SELECT COUNT(*) FROM all_records),"
            " (SELECT COUNT(*) FROM telemetry_log_unmerged) + (SELECT COUNT(*) FROM staged_results_left)"
        ).fetchone()
    except (sqlite3.Error, psycopg.Error):
        return int(reader.execute("SELECT COUNT(*) FROM records").fetchone()[0]), 0
    return int(row[0]), int(row[1])


def per_record(delta: dict[str, Any], records: int) -> dict[str, float]:
    """The byte counts of a `disk_delta` per stored record."""
    keys = ("wal_bytes", "data_page_bytes", "wal_plus_data_bytes", "proc_write_bytes", "store_growth_bytes")
    return {key: delta[key] / max(1, records) for key in keys}


class FleetPoller:
    """GET /api/fleet (every device) every `interval_s`, timing each response."""

    def __init__(self, url: str, interval_s: float = 0.5) -> None:
        self.host, port = url.removeprefix("http://").split(":")
        self.port = int(port)
        self.interval_s = interval_s
        self.times_ms: list[float] = []
        self.devices_seen = 0
        self.measuring = False
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def get(self, path: str) -> Any:
        """One GET on a connection of its own (the polling thread keeps its own)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            conn.request("GET", path)
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()

    def _run(self) -> None:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        while not self.stop.is_set():
            started = time.perf_counter()
            conn.request("GET", "/api/fleet")
            body = conn.getresponse().read()
            elapsed = time.perf_counter() - started
            if self.measuring:
                self.times_ms.append(elapsed * 1e3)
                self.devices_seen = len(json.loads(body)["devices"])
            self.stop.wait(max(0.0, self.interval_s - elapsed))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=8, help="MQTT connections the load shares")
    parser.add_argument("--warmup", type=float, default=15.0)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--drain", type=float, default=60.0, help="seconds to catch up after the load")
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--pg-dsn", default=DEFAULT_DSN, help="the PostgreSQL server (--store postgres)")
    parser.add_argument(
        "--broker-autosave-s",
        type=int,
        default=1,
        help="seconds between the broker's persistence saves (1: the demo broker's; 10: the shipped one's)",
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ctxscope-scale-"))
    db = work / "collector.db"
    pg_scope = contextlib.ExitStack()  # the fresh schema, dropped on close
    pg_report: dict[str, Any] = {}
    if args.store == "postgres":
        pg = pg_scope.enter_context(fresh_schema(args.pg_dsn))
        store_url = pg.store_url
        idle0 = snapshot(pg.admin, pg.schema)
        time.sleep(IDLE_S)
        idle = disk_delta(idle0, snapshot(pg.admin, pg.schema))
        pg_report["settings"] = settings(pg.admin)
        pg_report["idle_before_run"] = idle | {
            "wal_bytes_per_s": idle["wal_bytes"] / idle["seconds"],
            "proc_write_bytes_per_s": idle["proc_write_bytes"] / idle["seconds"],
        }
        devices = block_devices(data_directory(pg.admin))
    else:
        store_url = f"sqlite:///{db}"
        devices = block_devices([work])
    broker = MosquittoBroker(work / "broker", autosave_interval_s=args.broker_autosave_s)
    broker.start()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    collector = subprocess.Popen(
        [sys.executable, str(HERE / "collector_proc.py"), f"{broker.host}:{broker.port}", store_url],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    load = None
    try:
        assert collector.stdout is not None
        url = collector.stdout.readline().split()[1]
        proc = psutil.Process(collector.pid)
        broker_proc = next(c for c in psutil.Process().children() if c.name().startswith("mosquitto"))
        load = subprocess.Popen(
            [sys.executable, str(HERE / "scale_load.py"), broker.host, str(broker.port), str(args.devices),
             str(args.connections)],
            stdout=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        poller = FleetPoller(url)
        poller.thread.start()
        time.sleep(args.warmup)
        if args.store == "postgres":
            checkpoint(pg.admin)  # what the warm-up dirtied is written before the window
            pg0, rows0 = snapshot(pg.admin, pg.schema), count_records(pg.admin, pg.schema)
        proc.cpu_percent(None)
        io0, bytes0, used0 = proc.io_counters().write_bytes, store_bytes(db), used_bytes(db)
        # no sync here: a sync stalls the collector's own fsyncs and puts a backlog into the window
        dev0, broker0 = device_written_bytes(devices, sync=False), broker_proc.io_counters().write_bytes
        window_start_ns = time.time_ns()
        poller.measuring = True
        cpu, rss, inbox = [], [], []
        deadline = time.monotonic() + args.duration
        while time.monotonic() < deadline:
            time.sleep(1.0)
            cpu.append(proc.cpu_percent(None))
            rss.append(proc.memory_info().rss)
            inbox.append(poller.get("/api/ingest")["inbox_messages"])
        poller.measuring = False
        window_end_ns = time.time_ns()
        load.send_signal(signal.SIGTERM)
        published = int(load.communicate(timeout=120)[0].split()[1])
        # let the collector catch up with what the window published, then read the lags
        reader: Any
        if args.store == "postgres":
            reader, mark = psycopg.connect(store_url, autocommit=True), "%s"
        else:
            reader, mark = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30), "?"
        # every record, not only the window's: a collector that is behind stores older ones first; and
        # until nothing is left staged, so the merge of the window's records is written and counted
        drained_by = time.monotonic() + args.drain
        stored_before = -1
        while time.monotonic() < drained_by:
            stored, staged = stored_and_staged(reader)
            if stored == stored_before and staged == 0:
                break
            stored_before = stored
            time.sleep(2.0)
        io1, bytes1, used1 = proc.io_counters().write_bytes, store_bytes(db), used_bytes(db)
        if args.store == "postgres":
            checkpoint(pg.admin)  # what the window dirtied is written now, and counted
            pg1, rows1 = snapshot(pg.admin, pg.schema), count_records(pg.admin, pg.schema)
        # PostgreSQL: after the checkpoint's writes
        dev1, broker1 = device_written_bytes(devices, sync=True), broker_proc.io_counters().write_bytes
        poller.stop.set()
        window = (window_start_ns, window_end_ns)
        # staged records are stored too (committed, acknowledged): a store with staging tables is read
        # through its view of both, so a drain shorter than its merge interval still finds them
        records = "records" if stored_and_staged(reader)[1] == 0 else "all_records"
        lag_rows = reader.execute(
            f"SELECT ts, received_ns - ts FROM {records} WHERE ts BETWEEN {mark} AND {mark}", window
        )
        ts_lags = np.array(lag_rows.fetchall(), dtype=np.int64).reshape(-1, 2)
        ts, lags = ts_lags[:, 0], ts_lags[:, 1].astype(float)
        total_stored, staged_at_end = stored_and_staged(reader)
        reader.close()
        window_s = (window_end_ns - window_start_ns) / 1e9
        stored_window = int(lags.size)
        report: dict[str, Any] = {
            "what": f"one collector (ingest + {'PostgreSQL' if args.store == 'postgres' else 'SQLite'} "
            "store + dashboard) under N simulated devices",
            "command": " ".join(["python bench/collector/scale.py", *sys.argv[1:]]),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "devices": args.devices,
            "load": "1 telemetry batch/s per device (10 samples, 2 channels) + a point result every 10 s",
            "window_s": window_s,
            "published_total": published,
            "stored_total": total_stored,
            # records still staged when the drain ended (not in the lags, their merge not counted): 0
            # unless --drain was too short for the store's merge interval
            "staged_at_end": staged_at_end,
            "stored_in_window_per_s": stored_window / window_s,
            "expected_per_s": args.devices * 1.1,
            "ingest_lag_s": percentiles(list(lags * 1e-9)),
            "ingest_lag_p99_s_per_10s": [x * 1e-9 for x in slice_p99(ts, lags, window_start_ns, 10**10)],
            "inbox_messages_per_s": percentiles(inbox),
            "api_fleet_ms": percentiles(poller.times_ms) | {"devices_in_answer": poller.devices_seen},
            "collector_cpu_pct": percentiles(cpu),
            "collector_rss_mib_max": max(rss) / 2**20,
            # each minute's last sample: a collector left running for hours should level off
            "collector_rss_mib_per_min": [x / 2**20 for x in rss[59::60]],
            # from the window's start to the end of the drain, per record published in the window
            "disk_written_per_record_bytes": (io1 - io0) / max(1, stored_window),
            "store_growth_per_record_bytes": (bytes1 - bytes0) / max(1, stored_window),
            # SQLite: the pages in use grew by (free pages and the WAL file's size left out)
            "store_used_growth_per_record_bytes": (used1 - used0) / max(1, stored_window)
            if args.store == "sqlite"
            else None,
            # what reached the store's block device(s) over the same span (journal included, every
            # process on the machine; os.sync() at the end, none at the start): the kernel's per-process
            # count above is charged per page-cache folio dirtied, which can exceed what the device is sent
            "device_written_per_record_bytes": (dev1 - dev0) / max(1, stored_window),
            "block_devices": [str(stat.parent.resolve().name) for stat in devices],
            # of which the broker's persistence (it saves its store, queued messages included, every
            # second: a backlog queued for a collector that is behind is written again each time)
            "broker_disk_written_per_record_bytes": (broker1 - broker0) / max(1, stored_window),
        }
        if args.store == "postgres":
            server = disk_delta(pg0, pg1)
            per = per_record(server, stored_window)
            report["store"] = "postgres"
            report["collector_disk_written_per_record_bytes"] = report["disk_written_per_record_bytes"]
            report["disk_written_per_record_bytes"] = per["wal_plus_data_bytes"]
            report["store_growth_per_record_bytes"] = per["store_growth_bytes"]
            report["postgres"] = pg_report | {
                "disk_written_counts": "server WAL bytes (pg_current_wal_lsn difference) + data pages "
                "written (pg_stat_bgwriter buffers_checkpoint + buffers_clean + buffers_backend, x "
                "block_size), CHECKPOINT forced at the window's start and after the drain; cluster-wide",
                "store_growth_counts": "pg_total_relation_size of the schema's tables (indexes, TOAST)",
                "window": server,
                # per record published in the window (as the SQLite rows count), and per record
                # stored between the two snapshots: the same when the collector keeps up
                "per_record_bytes": per,
                "records_stored_between_snapshots": rows1 - rows0,
                "per_record_stored_between_snapshots_bytes": per_record(server, rows1 - rows0),
                # the cross-check counts like the SQLite rows do (/proc io): a commit re-dirties the
                # partly written WAL page, which the kernel charges again after every flush
                "proc_io_to_growth_ratio": per["proc_write_bytes"] / max(1e-9, per["store_growth_bytes"]),
                "postgres_processes_at_end": pg1.postgres_processes,
                "idle_wal_bytes_over_the_same_seconds": pg_report["idle_before_run"]["wal_bytes_per_s"]
                * server["seconds"],
            }
        report["written_to_growth_ratio"] = report["disk_written_per_record_bytes"] / max(
            1e-9, report["store_growth_per_record_bytes"]
        )
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
        lag, fleet = report["ingest_lag_s"], report["api_fleet_ms"]
        print(
            f"{args.devices} devices: stored {report['stored_in_window_per_s']:.0f}/s of "
            f"{report['expected_per_s']:.0f}/s; lag p50 {lag.get('p50', float('nan')):.3f} s, "
            f"p99 {lag.get('p99', float('nan')):.3f} s (per 10 s: "
            f"{', '.join(f'{x:.2f}' for x in report['ingest_lag_p99_s_per_10s'])}); "
            f"inbox p50 {report['inbox_messages_per_s'].get('p50', float('nan')):.0f} messages; "
            f"/api/fleet p95 {fleet.get('p95', float('nan')):.0f} ms "
            f"({fleet['devices_in_answer']} devices); RSS {report['collector_rss_mib_max']:.0f} MiB; "
            f"disk {report['disk_written_per_record_bytes'] / 1e3:.1f} KB/record vs store "
            f"{report['store_growth_per_record_bytes'] / 1e3:.2f} KB/record "
            f"({report['written_to_growth_ratio']:.1f}x); store's block device "
            f"{report['device_written_per_record_bytes'] / 1e3:.1f} KB/record (broker "
            f"{report['broker_disk_written_per_record_bytes'] / 1e3:.1f}); CPU p95 "
            f"{report['collector_cpu_pct'].get('p95', float('nan')):.0f}%"
        )
        if args.store == "postgres":
            per = report["postgres"]["per_record_bytes"]
            print(
                f"  server: WAL {per['wal_bytes'] / 1e3:.2f} + data pages {per['data_page_bytes'] / 1e3:.2f} "
                f"KB/record; /proc io of postgres processes {per['proc_write_bytes'] / 1e3:.2f} KB/record "
                f"({report['postgres']['proc_io_to_growth_ratio']:.1f}x); "
                f"idle WAL before the run {pg_report['idle_before_run']['wal_bytes_per_s']:.0f} B/s"
            )
    finally:
        if load is not None and load.poll() is None:
            load.kill()
        collector.send_signal(signal.SIGTERM)
        try:
            collector.wait(60)
        except subprocess.TimeoutExpired:
            collector.kill()
        broker.stop()
        pg_scope.close()  # PostgreSQL: drops the run's schema


if __name__ == "__main__":
    main()
