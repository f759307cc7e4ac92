"""Benchmark: several collectors share ingest (MQTT shared subscription) into one PostgreSQL, under a
fleet of N simulated devices, on this machine's cores.

Starts a private mosquitto, `--collectors` collector processes (`collector_proc.py`: ingest + store +
dashboard, each its own client id, all in one share group, all on one fresh PostgreSQL schema) and the
load (`scale_load.py`: one telemetry batch per device every `--tick-s` seconds, a point result every
tenth tick). After a warm-up it measures over `--duration` seconds, then stops the load, lets the
collectors drain and checks the store:
- exactly once: per device, the stored data records are exactly seqs 3..newest (1 and 2 are the
  meta and status, kept as state, not records) of the stream the load used: none lost, none extra;
  the collectors' stored counts add up to the rows and no collector stored a duplicate;
- ingest lag: `records.received_ns - ts` of every record published in the window, p50 / p99 / max;
- throughput: records stored per second in the window against the load's rate;
- machine load: `nproc`, the 1-minute load average, whole-machine CPU, and the CPU of each collector,
  the broker, the load generator and every `postgres` process on the host (the server is shared).
Values are synthetic (labelled `simulated`); every process shares the same cores.

    python bench/collector/share_scale.py --devices 10000 --collectors 2 --tick-s 10 \\
        --out results/collector/scale/share-10000.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
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
from machine_load import LoadSampler
from pg_disk import DEFAULT_DSN, fresh_schema

from ctxscope.broker import MosquittoBroker

HERE = Path(__file__).resolve().parent
STATE_SEQS = 2  # meta and status: seqs 1 and 2 of every simulated device, stored as state


def start_collectors(n: int, broker: str, store_url: str, env: dict[str, str]) -> list[subprocess.Popen[str]]:
    procs = []
    for i in range(n):
        command = [sys.executable, str(HERE / "collector_proc.py"), broker, store_url]
        command += ["--client-id", f"bench_share_{i}", "--share-group", "bench"]
        procs.append(subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env))
    for proc in procs:
        assert proc.stdout is not None
        if not proc.stdout.readline().startswith("URL"):
            for started in procs:
                started.kill()
            raise SystemExit("a collector did not start")
    return procs


def stop_collectors(procs: list[subprocess.Popen[str]]) -> list[dict[str, int]]:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    counters = []
    for proc in procs:
        out = proc.communicate(timeout=120)[0]
        line = next(x for x in out.splitlines() if x.startswith("COUNTERS"))
        counters.append(json.loads(line.split(" ", 1)[1]))
    return counters


def exactly_once(conn: psycopg.Connection, sent: dict[str, list[Any]]) -> dict[str, Any]:
    """Compare the stored records, per device, with what the load published."""
    rows = conn.execute(
        "SELECT device, stream, COUNT(*), MIN(seq), MAX(seq) FROM records GROUP BY device, stream"
    )
    stored = {(d, s): (n, lo, hi) for d, s, n, lo, hi in rows.fetchall()}
    lost = extra = wrong = 0
    for device, (stream, newest) in sent.items():
        expected = newest - STATE_SEQS
        n, lo, hi = stored.pop((device, stream), (0, None, None))
        lost += max(0, expected - n)
        extra += max(0, n - expected)
        if n and (lo != STATE_SEQS + 1 or hi != newest):
            wrong += 1
    return {
        "devices": len(sent),
        "expected_records": sum(newest - STATE_SEQS for _, newest in sent.values()),
        "stored_records": int(conn.execute("SELECT COUNT(*) FROM records").fetchone()[0]),  # type: ignore[index]
        "lost": lost,
        "extra": extra + sum(n for n, _, _ in stored.values()),
        "devices_with_wrong_seq_range": wrong,
    }


def wait_drained(conn: psycopg.Connection, expected: int, timeout_s: float) -> float:
    """Poll until the store holds `expected` records (or stops growing for 20 s); the seconds taken."""
    started = time.monotonic()
    last, last_change = -1, started
    while time.monotonic() - started < timeout_s:
        count = conn.execute("SELECT COUNT(*) FROM records").fetchone()[0]  # type: ignore[index]
        if count >= expected:
            break
        if count != last:
            last, last_change = count, time.monotonic()
        elif time.monotonic() - last_change > 20:
            break
        time.sleep(1.0)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--collectors", type=int, default=2)
    parser.add_argument("--connections", type=int, default=8, help="MQTT connections the load shares")
    parser.add_argument(
        "--tick-s", type=float, default=10.0, help="seconds between a device's telemetry batches"
    )
    parser.add_argument("--warmup", type=float, default=30.0)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument(
        "--drain", type=float, default=300.0, help="seconds allowed to catch up after the load"
    )
    parser.add_argument("--pg", default=DEFAULT_DSN, help="server to use")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ctxscope-share-"))
    pg_scope = contextlib.ExitStack()  # the fresh schema, dropped on close
    store_url = pg_scope.enter_context(fresh_schema(args.pg)).store_url
    broker = MosquittoBroker(work / "broker")
    broker.start()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    collectors: list[subprocess.Popen[str]] = []
    load = None
    try:
        collectors = start_collectors(args.collectors, f"{broker.host}:{broker.port}", store_url, env)
        sent_file = work / "sent.json"
        load = subprocess.Popen(
            [sys.executable, str(HERE / "scale_load.py"), broker.host, str(broker.port), str(args.devices),
             str(args.connections), "--tick-s", str(args.tick_s), "--sent", str(sent_file)],
            stdout=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        me = psutil.Process()
        roles = {f"collector_{i}": psutil.Process(p.pid) for i, p in enumerate(collectors)}
        roles["load"] = psutil.Process(load.pid)
        roles["broker"] = next(c for c in me.children() if c.name().startswith("mosquitto"))
        sampler = LoadSampler(roles)
        threading.Thread(target=sampler.run, daemon=True).start()
        time.sleep(args.warmup)
        sampler.measuring = True
        window = (time.time_ns(), 0)
        time.sleep(args.duration)
        window = (window[0], time.time_ns())
        sampler.measuring = False
        load.send_signal(signal.SIGTERM)
        published, _, unacked = load.communicate(timeout=180)[0].split()[1:4]
        sent = json.loads(sent_file.read_text())
        reader = psycopg.connect(store_url, autocommit=True)
        expected = sum(newest - STATE_SEQS for _, newest in sent.values())
        drain_s = wait_drained(reader, expected, args.drain)
        counters = stop_collectors(collectors)
        check = exactly_once(reader, sent)
        rows = reader.execute("SELECT ts, received_ns FROM records WHERE ts BETWEEN %s AND %s", window)
        ts, received = np.array(rows.fetchall(), dtype=np.int64).reshape(-1, 2).T
        lags = (received - ts) * 1e-9
        in_window = "SELECT COUNT(*) FROM records WHERE received_ns BETWEEN %s AND %s"
        stored_in_window = reader.execute(in_window, window).fetchone()[0]  # type: ignore[index]
        reader.close()
        window_s = (window[1] - window[0]) / 1e9
        report: dict[str, Any] = {
            "what": f"{args.collectors} collectors sharing ingest ($share) into one PostgreSQL",
            "command": " ".join(["python bench/collector/share_scale.py", *sys.argv[1:]]),
            "machine": {
                "nproc": len(os.sched_getaffinity(0)),
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "shared": "the cores and the PostgreSQL server are shared with other users' work",
            },
            "devices": args.devices,
            "collectors": args.collectors,
            "load": f"1 telemetry batch per device every {args.tick_s:g} s (10 samples, 2 channels) + a "
            f"point result every {10 * args.tick_s:g} s, over {args.connections} MQTT connections",
            "window_s": window_s,
            "published_data_records": int(published),
            "unacknowledged_by_broker": int(unacked),
            "drain_s": drain_s,
            "exactly_once": check,
            "collector_counters": counters,
            "stored_by_collectors": sum(c["stored"] for c in counters),
            "duplicates": sum(c["duplicates"] for c in counters),
            "offered_per_s": args.devices * 1.1 / args.tick_s,
            "published_in_window_per_s": lags.size / window_s,
            "stored_in_window_per_s": stored_in_window / window_s,
            "ingest_lag_s": percentiles(list(lags)),
            # p99 lag of the records published in each 10 s of the window: flat when ingest keeps up
            "ingest_lag_p99_s_per_10s": slice_p99(ts, lags, window[0], 10 * 10**9),
            "machine_load": sampler.summary(),
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
        lag, load_summary = report["ingest_lag_s"], report["machine_load"]
        print(
            f"{args.devices} devices, {args.collectors} collectors: {check['stored_records']} of "
            f"{check['expected_records']} records stored, lost {check['lost']}, extra {check['extra']}, "
            f"duplicates {report['duplicates']}; stored {report['stored_in_window_per_s']:.0f}/s in the "
            f"window, offered {report['offered_per_s']:.0f}/s; lag p50 {lag.get('p50', float('nan')):.3f} s, "
            f"p99 {lag.get('p99', float('nan')):.3f} s, max {lag.get('max', float('nan')):.3f} s; "
            f"load average 1 min max {load_summary['loadavg_1m']['max']:.2f} on "
            f"{report['machine']['nproc']} cores"
        )
    finally:
        if load is not None and load.poll() is None:
            load.kill()
        for proc in collectors:
            if proc.poll() is None:
                proc.kill()
        broker.stop()
        pg_scope.close()  # drops it


if __name__ == "__main__":
    main()
