"""Benchmark: how long the device page's History takes for a span of raw telemetry, per day of it.

A SQLite store gets `--days` of one device's telemetry as an agent sends it (one batch a second of
`--samples` samples on `--channels` channels, float32), through `Store.write_batch` and the staging
merge; then one channel's history over the whole span is read `--repeat` times, as the History
buttons ask for it (`max_points` 500), and the median wall time is reported per day of raw
telemetry. No rollups: every sample is still raw, the case of a span inside the raw window.

    python bench/collector/history_span.py --days 1 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ctxscope.collector.store.base import Accepted
from ctxscope.collector.store.sqlite import SQLiteStore
from ctxscope.shared.messages import TelemetryBatch, TelemetryChannel
from ctxscope.shared.topics import Channel, topic_for

DEVICE = "history-bench"
STREAM = "00000000000000b1"
NS = 1_000_000_000
DAY_S = 86400


def batch(seq: int, wall0_ns: int, samples: int, channels: int, rng: np.random.Generator) -> TelemetryBatch:
    t = np.arange(samples, dtype="<i8") * (NS // samples)
    return TelemetryBatch(
        device=DEVICE,
        stream=STREAM,
        seq=seq,
        ts=int(t[-1]),
        source="nvml",
        mono_to_wall_ns=wall0_ns,
        t_ns=t.tobytes(),
        channels={
            f"channel_{i:02d}": TelemetryChannel(
                unit="W", dtype="f4", data=rng.uniform(5, 60, samples).astype("<f4").tobytes()
            )
            for i in range(channels)
        },
    )


def fill(store: SQLiteStore, since_ns: int, seconds: int, samples: int, channels: int) -> None:
    rng = np.random.default_rng(7)
    topic = topic_for(DEVICE, Channel.TELEMETRY)
    for start in range(0, seconds, 500):
        chunk = [
            Accepted(topic, batch(s + 1, since_ns + s * NS, samples, channels, rng))
            for s in range(start, min(seconds, start + 500))
        ]
        store.write_batch(chunk)
        if start % 20_000 == 0:
            store.merge_staged()
            print(f"  {start / DAY_S:.2f} of {seconds / DAY_S:.2f} days written", file=sys.stderr)
    store.merge_staged()


def run(days: float, samples: int, channels: int, repeat: int) -> dict[str, object]:
    """Fill a store with `days` of raw telemetry and time `repeat` reads of one channel over all of it."""
    seconds = int(days * DAY_S)
    until_ns = time.time_ns() // NS * NS
    since_ns = until_ns - seconds * NS
    with tempfile.TemporaryDirectory() as folder:
        store = SQLiteStore(Path(folder) / "history.db")
        started = time.perf_counter()
        fill(store, since_ns, seconds, samples, channels)
        fill_s = time.perf_counter() - started
        took = []
        for _ in range(repeat):
            started = time.perf_counter()
            found = store.telemetry_history(DEVICE, "nvml", "channel_00", since_ns, until_ns, 500)
            took.append(time.perf_counter() - started)
        store.close()
    counted = sum(b.n for b in found.buckets)
    if counted != seconds * samples:
        raise AssertionError(f"{counted} samples in the history of {seconds * samples} written")
    median = statistics.median(took)
    return {
        "days": days,
        "batches": seconds,
        "samples_per_batch": samples,
        "channels": channels,
        "buckets": len(found.buckets),
        "bucket_width_s": found.width_s,
        "fill_s": round(fill_s, 1),
        "read_s": [round(t, 3) for t in took],
        "read_median_s": round(median, 3),
        "read_s_per_day": round(median / days, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=1.0, help="days of raw telemetry")
    parser.add_argument("--samples", type=int, default=20, help="samples per batch (one batch a second)")
    parser.add_argument("--channels", type=int, default=17, help="channels per batch")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    row = run(args.days, args.samples, args.channels, args.repeat)
    command = " ".join(["python", "bench/collector/history_span.py", *sys.argv[1:]])
    json.dump({"command": command, **row}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
