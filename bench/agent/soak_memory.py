"""Where a headless agent's memory goes over hours: `ctxscope agent serve` run in this process under
tracemalloc, with its RSS, the Python heap tracemalloc sees, its threads, file descriptors and children
sampled once a minute, and the heap's growth by source line compared at the end.

RSS that rises while the traced heap stays flat is native memory (SQLite's page cache, the C allocator's
arenas, a library's buffers); a traced heap that rises names the lines that hold it. Run it twice, with
and without telemetry, to tell the telemetry session's share from the link's and the spool's:

    python bench/agent/soak_memory.py --minutes 150 --telemetry-rate-hz 20 --out soak-telemetry.json
    python bench/agent/soak_memory.py --minutes 150 --telemetry-rate-hz 0 --out soak-quiet.json

The broker must take an anonymous client on loopback (the default 127.0.0.1:1883). The slopes are fitted
after --settle-minutes (the telemetry ring holds 900 s of samples, so it is full after 15 minutes).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

import click
import numpy as np
import psutil

from ctxscope.agent.daemon import serve

MIB = 1 << 20


def _sample(started: float) -> dict[str, float]:
    me = psutil.Process()
    traced, _ = tracemalloc.get_traced_memory()
    children = me.children(recursive=True)
    return {
        "t_min": (time.monotonic() - started) / 60,
        "rss_mib": me.memory_info().rss / MIB,
        "traced_mib": traced / MIB,
        "children_rss_mib": sum(c.memory_info().rss for c in children) / MIB,
        "threads": me.num_threads(),
        "fds": me.num_fds(),
        "children": len(children),
    }


def _slope_mib_per_h(samples: list[dict[str, float]], key: str, settle_min: float) -> float | None:
    points = [(s["t_min"], s[key]) for s in samples if s["t_min"] >= settle_min]
    if len(points) < 3:
        return None
    t, y = np.array(points).T
    return float(np.polyfit(t / 60, y, 1)[0])


@click.command()
@click.option("--minutes", type=click.FloatRange(min=1), default=150.0, show_default=True)
@click.option("--telemetry-rate-hz", type=click.FloatRange(min=0), default=20.0, show_default=True)
@click.option("--broker", default="127.0.0.1:1883", show_default=True)
@click.option("--settle-minutes", type=click.FloatRange(min=0), default=20.0, show_default=True)
@click.option("--interval-s", type=click.FloatRange(min=1), default=60.0, show_default=True)
@click.option(
    "--trim-every-s",
    type=click.FloatRange(min=0),
    default=0.0,
    help="call glibc's malloc_trim(0) this often (0: never): RSS that then stays flat was free memory the "
    "allocator kept, not a leak",
)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
def main(
    minutes: float,
    telemetry_rate_hz: float,
    broker: str,
    settle_minutes: float,
    interval_s: float,
    trim_every_s: float,
    out: Path,
) -> None:
    tracemalloc.start(4)
    started = time.monotonic()
    samples: list[dict[str, float]] = []
    settled: list[tracemalloc.Snapshot] = []
    done = threading.Event()

    def watch() -> None:
        while not done.wait(interval_s):
            samples.append(_sample(started))
            if not settled and samples[-1]["t_min"] >= settle_minutes:
                settled.append(tracemalloc.take_snapshot())
            print(json.dumps(samples[-1]), file=sys.stderr, flush=True)

    def trim() -> None:
        libc = ctypes.CDLL("libc.so.6")
        while not done.wait(trim_every_s):
            libc.malloc_trim(0)

    watcher = threading.Thread(target=watch, name="soak-watch", daemon=True)
    watcher.start()
    if trim_every_s:
        threading.Thread(target=trim, name="soak-trim", daemon=True).start()
    with tempfile.TemporaryDirectory(prefix="ctxscope-soak-") as spool_dir:
        device = f"soak-{os.getpid()}"
        spool = Path(spool_dir) / "spool.db"
        with contextlib.suppress(SystemExit):  # click's exit at the end of serve
            serve.callback(None, device, broker, spool, telemetry_rate_hz, "cpu", minutes * 60)
    done.set()
    watcher.join()
    growth = []
    if settled:
        end = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
        for stat in end.compare_to(settled[0], "traceback")[:15]:
            growth.append(
                {
                    "kib": stat.size_diff / 1024,
                    "blocks": stat.count_diff,
                    "where": stat.traceback.format()[-4:],
                }
            )
    summary = {
        "command": " ".join(["python", "bench/agent/soak_memory.py", *sys.argv[1:]]),
        "minutes": minutes,
        "telemetry_rate_hz": telemetry_rate_hz,
        "trim_every_s": trim_every_s,
        "malloc_arena_max": os.environ.get("MALLOC_ARENA_MAX"),
        "settle_minutes": settle_minutes,
        "slope_mib_per_h": {
            key: _slope_mib_per_h(samples, key, settle_minutes)
            for key in ("rss_mib", "traced_mib", "children_rss_mib")
        },
        "heap_growth_since_settled": growth,
        "samples": samples,
    }
    out.write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary["slope_mib_per_h"]))


if __name__ == "__main__":
    main()
