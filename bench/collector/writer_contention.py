"""Benchmark: the store's writer alone and beside a busy thread, as ingest runs beside the dashboard.

The collector's ingest writer shares one interpreter with the dashboard's request threads. Python's
sqlite3 releases the interpreter's lock around each step of a statement; a thread that wants it back
while another thread computes waits up to the interpreter's switch interval. So what the writer stores
per second beside a busy thread depends on how many times a batch gives the lock up, not on how fast
SQLite is. This writes `--ticks` telemetry batches (10 samples, 2 channels) of each of `--devices`
simulated devices, plus a point result for every tenth device, to a fresh SQLite store with
`SQLiteStore.write_batch`, `--per-commit` messages a batch (what the writer takes from a full inbox),
once with the process otherwise idle and once beside a thread that runs pure Python without pause
(a dashboard answer stands for it), for each `--switch-interval`. Records per second are wall-clock;
each case runs in a fresh store after the fleet's meta and status are written.

    python bench/collector/writer_contention.py --out results/collector/scale/writer-contention.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from simfleet import SimDevice

from ctxscope.collector.store.base import Accepted
from ctxscope.collector.store.sqlite import SQLiteStore


def spin(stop: threading.Event) -> None:
    """Pure-Python work that never blocks: it gives the lock up only when the interpreter asks."""
    total = 0
    while not stop.is_set():
        for i in range(1000):
            total += i


def run_case(devices: int, ticks: int, per_commit: int, busy: bool, switch_s: float) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="writer-contention-"))
    store = SQLiteStore(folder / "store.sqlite")
    fleet = [SimDevice(f"dev-{i:05d}") for i in range(devices)]
    store.write_batch([Accepted("setup", m) for d in fleet for m in (d.meta(), d.status("busy", run_id="w"))])
    messages = []
    for tick in range(ticks):
        for i, device in enumerate(fleet):
            messages.append(Accepted("t", device.telemetry(power_w=10.0 + tick, temp_c=40.0)))
            if (tick + i) % 10 == 0:
                messages.append(
                    Accepted("r", device.result("w", "qwen2.5-0.5b", "transformer", 1024, 1.0, 2.0))
                )
    previous = sys.getswitchinterval()
    sys.setswitchinterval(switch_s)
    stop = threading.Event()
    spinner = threading.Thread(target=spin, args=(stop,), daemon=True)
    try:
        if busy:
            spinner.start()
        started = time.perf_counter()
        batches = [messages[s : s + per_commit] for s in range(0, len(messages), per_commit)]
        stored = sum(store.write_batch(batch).stored for batch in batches)
        seconds = time.perf_counter() - started
    finally:
        stop.set()
        if busy:
            spinner.join()
        sys.setswitchinterval(previous)
        store.close()
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()
    return {
        "busy_thread": busy,
        "switch_interval_s": switch_s,
        "messages": len(messages),
        "stored": stored,
        "seconds": seconds,
        "records_per_s": stored / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=3000)
    parser.add_argument("--ticks", type=int, default=4)
    parser.add_argument("--per-commit", type=int, default=500)
    parser.add_argument("--switch-interval", type=float, nargs="+", default=[0.005, 0.001])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    cases = []
    for switch_s in args.switch_interval:
        for busy in (False, True):
            case = run_case(args.devices, args.ticks, args.per_commit, busy, switch_s)
            cases.append(case)
            print(
                f"switch interval {switch_s * 1e3:.1f} ms, {'busy thread' if busy else 'idle'}: "
                f"{case['records_per_s']:.0f} records/s ({case['stored']} in {case['seconds']:.2f} s)",
                flush=True,
            )
    report = {
        "what": "records the SQLite store's writer stores per second, alone and beside a busy Python thread",
        "command": " ".join(["python bench/collector/writer_contention.py", *sys.argv[1:]]),
        "machine": {"python": platform.python_version(), "sqlite": sqlite3.sqlite_version},
        "devices": args.devices,
        "per_commit": args.per_commit,
        "cases": cases,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
