"""Measured memory bandwidth, and the bandwidth-bound floor of a decode step.

Decode at batch 1 reads every weight and the whole KV cache (or recurrent state) once per token, so
its floor is those bytes over the device's memory bandwidth. The bandwidth is measured, not taken
from a datasheet: a streaming copy of a buffer far larger than the caches (read + write counted),
timed a few times; the best is kept. Measured once per process and device.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import torch

GPU_COPY_BYTES = 1 << 30  # 1 GiB source: far past the H200's 50 MB L2
CPU_COPY_BYTES = 64 << 20
COPY_REPEATS = 10


@dataclass(frozen=True)
class Bandwidth:
    bytes_per_s: float
    method: str


@functools.cache
def measure(device: torch.device) -> Bandwidth:
    """The best of COPY_REPEATS streaming copies on `device` (bytes read + written over time)."""
    size = GPU_COPY_BYTES if device.type == "cuda" else CPU_COPY_BYTES
    source = torch.empty(size, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    target.copy_(source)  # first touch, outside the timing
    best_ns: int | None = None
    for _ in range(COPY_REPEATS):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            target.copy_(source)
            end.record()
            end.synchronize()
            took_ns = int(start.elapsed_time(end) * 1e6)
        else:
            started = time.perf_counter_ns()
            target.copy_(source)
            took_ns = time.perf_counter_ns() - started
        best_ns = took_ns if best_ns is None else min(best_ns, took_ns)
    del source, target
    assert best_ns is not None and best_ns > 0
    kind = "device memory (HBM)" if device.type == "cuda" else "CPU memory (host copy, not a GPU figure)"
    return Bandwidth(
        2 * size / (best_ns / 1e9),
        f"{kind}: best of {COPY_REPEATS} copies of {size >> 20} MiB, read + write bytes over time",
    )


def decode_bytes_per_token(
    weight_bytes: int, cache_bytes_per_token: int, state_bytes: int, context: int
) -> int:
    """Bytes a decode step must read at least: every weight, the KV cache at `context`, the state."""
    return weight_bytes + cache_bytes_per_token * context + state_bytes
