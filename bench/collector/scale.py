"""Benchmark: one collector under a fleet of N simulated devices, on this machine's cores.

Starts a private mosquitto, the collector (ingest + SQLite store + dashboard, `collector_proc.py`)
in its own process, and the load (`scale_load.py`: one telemetry batch a second per device, a point
result every ten seconds) in another. After a warm-up it measures, over `--duration` seconds:
- ingest lag: stored time minus the record's publish time (`records.received_ns - ts`, from the
  store), p50 / p99 / max, in seconds, of every record published in the window;
- throughput: records stored per second against records published per second;
- `/api/fleet` response time with the whole fleet, one request every 0.5 s, p50 / p95 in ms;
- the collector process's resident memory (max) and bytes written to disk (`/proc` io counters)
  per stored record, against what the store grew by per record (database + WAL files);
- collector CPU (psutil, 100% = one core).
Values are synthetic (labelled `simulated`); every process shares the same cores.

    python bench/collector/scale.py --devices 3000 --duration 60 --out results/collector/scale-3000.json
"""

from __future__ import annotations

import argparse
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
from bench_live import percentiles

from ctxscope.broker import MosquittoBroker

HERE = Path(__file__).resolve().parent


def store_bytes(db: Path) -> int:
    return sum(p.stat().st_size for p in db.parent.glob(db.name + "*") if p.is_file())


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
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ctxscope-scale-"))
    db = work / "collector.db"
    broker = MosquittoBroker(work / "broker")
    broker.start()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    collector = subprocess.Popen(
        [sys.executable, str(HERE / "collector_proc.py"), f"{broker.host}:{broker.port}", f"sqlite:///{db}"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    load = None
    try:
        assert collector.stdout is not None
        url = collector.stdout.readline().split()[1]
        proc = psutil.Process(collector.pid)
        load = subprocess.Popen(
            [sys.executable, str(HERE / "scale_load.py"), broker.host, str(broker.port), str(args.devices),
             str(args.connections)],
            stdout=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        poller = FleetPoller(url)
        poller.thread.start()
        time.sleep(args.warmup)
        proc.cpu_percent(None)
        io0, bytes0 = proc.io_counters().write_bytes, store_bytes(db)
        window_start_ns = time.time_ns()
        poller.measuring = True
        cpu, rss = [], []
        deadline = time.monotonic() + args.duration
        while time.monotonic() < deadline:
            time.sleep(1.0)
            cpu.append(proc.cpu_percent(None))
            rss.append(proc.memory_info().rss)
        poller.measuring = False
        window_end_ns = time.time_ns()
        load.send_signal(signal.SIGTERM)
        published = int(load.communicate(timeout=120)[0].split()[1])
        # let the collector catch up with what the window published, then read the lags
        reader = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
        query = "SELECT COUNT(*) FROM records WHERE ts BETWEEN ? AND ?"
        drained_by = time.monotonic() + args.drain
        stored_before = -1
        while time.monotonic() < drained_by:
            stored = reader.execute(query, (window_start_ns, window_end_ns)).fetchone()[0]
            if stored == stored_before:
                break
            stored_before = stored
            time.sleep(2.0)
        io1, bytes1 = proc.io_counters().write_bytes, store_bytes(db)
        poller.stop.set()
        window = (window_start_ns, window_end_ns)
        lag_rows = reader.execute("SELECT received_ns - ts FROM records WHERE ts BETWEEN ? AND ?", window)
        lags = np.array(lag_rows.fetchall(), dtype=float).ravel()
        total_stored = reader.execute("SELECT COUNT(*) FROM records").fetchone()[0]
        reader.close()
        window_s = (window_end_ns - window_start_ns) / 1e9
        stored_window = int(lags.size)
        report: dict[str, Any] = {
            "what": "one collector (ingest + SQLite store + dashboard) under N simulated devices",
            "command": " ".join(["python bench/collector/scale.py", *sys.argv[1:]]),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "devices": args.devices,
            "load": "1 telemetry batch/s per device (10 samples, 2 channels) + a point result every 10 s",
            "window_s": window_s,
            "published_total": published,
            "stored_total": total_stored,
            "stored_in_window_per_s": stored_window / window_s,
            "expected_per_s": args.devices * 1.1,
            "ingest_lag_s": percentiles(list(lags * 1e-9)),
            "api_fleet_ms": percentiles(poller.times_ms) | {"devices_in_answer": poller.devices_seen},
            "collector_cpu_pct": percentiles(cpu),
            "collector_rss_mib_max": max(rss) / 2**20,
            # from the window's start to the end of the drain, per record published in the window
            "disk_written_per_record_bytes": (io1 - io0) / max(1, stored_window),
            "store_growth_per_record_bytes": (bytes1 - bytes0) / max(1, stored_window),
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
        lag, fleet = report["ingest_lag_s"], report["api_fleet_ms"]
        print(
            f"{args.devices} devices: stored {report['stored_in_window_per_s']:.0f}/s of "
            f"{report['expected_per_s']:.0f}/s; lag p50 {lag.get('p50', float('nan')):.3f} s, "
            f"p99 {lag.get('p99', float('nan')):.3f} s; "
            f"/api/fleet p95 {fleet.get('p95', float('nan')):.0f} ms "
            f"({fleet['devices_in_answer']} devices); RSS {report['collector_rss_mib_max']:.0f} MiB; "
            f"disk {report['disk_written_per_record_bytes'] / 1e3:.1f} KB/record vs store "
            f"{report['store_growth_per_record_bytes'] / 1e3:.2f} KB/record; CPU p95 "
            f"{report['collector_cpu_pct'].get('p95', float('nan')):.0f}%"
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


if __name__ == "__main__":
    main()
