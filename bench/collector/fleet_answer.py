"""Benchmark: what one dashboard request for the fleet costs the collector, without a live load.

`scale.py` measures `/api/fleet` while ingest runs, where its time depends on how the interpreter is
shared; this measures the request alone. A SQLite store is filled with N simulated devices (meta,
status, one telemetry batch each, as `simfleet.py` makes them), the dashboard app is served by
uvicorn in this process (`WebServer`), and `--requests` GETs of `/api/fleet` (every device) and of
`/api/fleet?devices=` with 10 of them (what the fleet page asks for when 10 devices have news) and of
`/api/fleet/<device>` (what a device page asks for on each of its device's records) are timed over
HTTP, one at a time. Also the process CPU time per request.

    python bench/collector/fleet_answer.py --devices 3000 --requests 40 --out fleet-answer.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench_live import percentiles
from simfleet import SimDevice

from ctxscope.collector.store.base import Accepted
from ctxscope.collector.store.sqlite import SQLiteStore
from ctxscope.collector.web.app import create_app
from ctxscope.collector.web.hub import LiveHub
from ctxscope.collector.web.server import WebServer

REPO = Path(__file__).resolve().parents[2]


def filled_store(path: Path, devices: int) -> SQLiteStore:
    store = SQLiteStore(path)
    fleet = [SimDevice(f"dev-{i:05d}") for i in range(devices)]
    store.write_batch([Accepted("setup", m) for d in fleet for m in (d.meta(), d.status("busy", run_id="w"))])
    store.write_batch([Accepted("t", d.telemetry(power_w=10.0, temp_c=40.0)) for d in fleet])
    return store


def timed_gets(url: str, requests: int) -> dict[str, Any]:
    """Wall time and this process's CPU time (server and client) of each GET after one untimed, in
    ms; the answer's size."""
    with urllib.request.urlopen(url) as response:
        size = len(response.read())
    wall, cpu = [], []
    for _ in range(requests):
        w0, c0 = time.perf_counter(), time.process_time()
        with urllib.request.urlopen(url) as response:
            response.read()
        wall.append((time.perf_counter() - w0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    wall_ms, cpu_ms = percentiles(wall), percentiles(cpu)
    return {
        "requests": requests,
        "wall_ms_p50": wall_ms["p50"],
        "wall_ms_p95": wall_ms["p95"],
        "cpu_ms_p50": cpu_ms["p50"],
        "answer_bytes": size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=3000)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="fleet-answer-"))
    store = filled_store(folder / "collector.db", args.devices)
    server = WebServer(create_app(store, LiveHub())).start()
    base = f"http://127.0.0.1:{server.port}/api/fleet"
    few = ",".join(f"dev-{i:05d}" for i in range(0, args.devices, max(1, args.devices // 10))[:10])
    try:
        rows = {
            "every_device": timed_gets(base, args.requests),
            "ten_devices": timed_gets(f"{base}?devices={few}", args.requests),
            "one_device_live": timed_gets(f"{base}/dev-00000", args.requests),
        }
    finally:
        server.stop()
        store.close()
    git = ["git", "-C", str(REPO)]
    revision = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    changed = subprocess.run([*git, "status", "--porcelain", "collector"], capture_output=True, text=True)
    report = {
        "command": " ".join(["python", "bench/collector/fleet_answer.py", *sys.argv[1:]]),
        # the collector code that answered: HEAD, and whether its collector/ differed from HEAD
        "revision": revision.stdout.strip() or None,
        "collector_changed_from_revision": bool(changed.stdout.strip()),
        "devices": args.devices,
        **rows,
    }
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    for name, row in rows.items():
        print(
            f"{args.devices} devices, {name}: {row['wall_ms_p50']:.1f} ms p50, "
            f"{row['wall_ms_p95']:.1f} ms p95 (cpu {row['cpu_ms_p50']:.1f} ms), "
            f"{row['answer_bytes'] / 1e6:.2f} MB"
        )


if __name__ == "__main__":
    main()
