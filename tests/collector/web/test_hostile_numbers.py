"""Every read of the store answers for any record the contract lets in: a device may send any finite
number (0, negatives, 5e-324, 1e300) under any metric name and unit. Random valid results of such
numbers, then every page, JSON view and the report over a real SQLite store; each answer must be a
200 (a ratio whose logarithm did not exist once made the device page and the report fail)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import httpx
import pytest

from ctxscope.collector.report import build_report
from ctxscope.collector.store.base import Store
from tests.collector.conftest import make_result

VALUES = [0.0, -1.0, 1e300, -1e300, 1e-320, 5e-324, 1.0, 123.0]
METRICS = [
    "ttft",
    "decode_per_token",
    "peak_memory",
    "decode_floor",
    "decode_floor_fraction",
    "prefill_energy",
    "decode_energy_per_token",
    "decode_bytes_per_token",
    "prefill_power_peak",
    "odd/name",
    "x" * 60,
]
UNITS = ["ms", "s", "MiB", "B", "J", "W", "GB/s", "%", "tokens/s", "bytes"]
PATHS = [
    "/",
    "/devices/orin-1",
    "/api/fleet",
    "/api/fleet/orin-1",
    "/api/devices/orin-1",
    "/api/devices/orin-1/figures",
    "/api/devices/orin-1/prediction",
    "/api/compare?devices=orin-1&models=qwen2.5-0.5b,mamba2-130m,falcon-h1-0.5b",
    "/api/compare?devices=orin-1&models=qwen2.5-0.5b&metric=decode_per_token",
]


@pytest.mark.parametrize("seed", range(6))
def test_every_view_answers_for_any_valid_numbers(
    served: Any, feeder: Any, simfleet: Any, store: Store, tmp_path: Path, seed: int
) -> None:
    rnd = random.Random(seed)
    feeder([simfleet.SimDevice("orin-1").meta(8 * 2**30)])
    results = [
        make_result(
            model=rnd.choice(["qwen2.5-0.5b", "mamba2-130m", "falcon-h1-0.5b"]),
            family=rnd.choice(["transformer", "ssm", "hybrid"]),
            context_len=rnd.choice([1, 1024, 4096, 16384, 2**31 - 1]),
            precision=rnd.choice(["bf16", "fp32"]),
            outcome=rnd.choice(["ok", "ok", "ok", "oom", "fault"]),
            metrics={
                name: (rnd.choice(UNITS), [rnd.choice(VALUES) for _ in range(rnd.randint(1, 3))])
                for name in rnd.sample(METRICS, 4)
            },
        )
        for _ in range(300)
    ]
    # and one pair whose TTFT quotient underflows to 0 next to a crossing (the case that failed)
    for length, transformer_ms, ssm_ms in ((512, 5e-324, 1e300), (8192, 100.0, 40.0), (32768, 400.0, 80.0)):
        results.append(
            make_result(model="llama3.2-1b", context_len=length, metrics={"ttft": ("ms", [transformer_ms])})
        )
        results.append(
            make_result(
                model="mamba-130m", family="ssm", context_len=length, metrics={"ttft": ("ms", [ssm_ms])}
            )
        )
    feeder(results)
    answers = {path: httpx.get(served.url + path, timeout=60).status_code for path in PATHS}
    assert answers == dict.fromkeys(PATHS, 200)
    assert build_report(store, tmp_path / "report", ("csv", "json")).is_file()
