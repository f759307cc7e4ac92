"""Microbenchmarks, one per kernel family, plus the GPU launch floor and the host cost per eager op.

Each returns a `Figure`: raw per-repetition samples with unit and method (what one sample is, the
warm-ups and repetitions taken and why they stopped), and the analytic work (FLOPs, bytes) of one
repetition so that a rate (TFLOP/s, GB/s) follows. On the CPU the same torch
operations run at small sizes and are labelled `reference`: they measure the CPU, not a GPU kernel.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Sizes:
    """Problem sizes: mid sizes on a GPU, tiny ones on a CPU or in tests."""

    gemm_n: int
    stream_elems: int
    scan_len: int
    scan_dim: int
    ssd_len: int
    ssd_heads: int
    sdpa_len: int
    sdpa_heads: int
    head_dim: int = 64
    state: int = 16
    ssd_state: int = 128
    tiny_ops: int = 500

    @classmethod
    def for_device(cls, device: str, *, tiny: bool = False) -> Sizes:
        if tiny:
            return cls(64, 1 << 16, 64, 32, 64, 2, 64, 2, head_dim=16, ssd_state=16, tiny_ops=100)
        if device.startswith("cuda"):
            return cls(8192, 1 << 28, 16384, 1536, 16384, 24, 8192, 14)
        return cls(512, 1 << 22, 1024, 256, 1024, 4, 1024, 4, tiny_ops=200)


@dataclass
class Figure:
    """One calibration figure: what ran, its samples (ms per repetition) and the work per repetition.

    `method` says what was timed, `sample` what one sample is; a skipped figure (`absent` says why)
    names no implementation, since nothing ran."""

    name: str
    family: str
    size: int
    method: str
    implementation: str
    reference: bool
    samples_ms: list[float] = field(default_factory=list)
    flops: float = 0.0
    bytes: float = 0.0
    absent: str | None = None
    sample: str = ""
    warmups: int = 0
    stop: str = ""

    def take(self, timing: Timing, per: int = 1) -> None:
        """Keep a timing's samples, each divided by `per` (runs per sample), and how they were taken."""
        self.samples_ms = [t / per for t in timing.samples_ms]
        self.warmups, self.stop = timing.warmups, timing.stop

    def counts(self) -> str:
        """The warm-ups and samples taken, and why the repetitions stopped."""
        return f"{self.warmups} warm-ups, then {len(self.samples_ms)} samples ({self.stop})"

    def rate(self, median_ms: float) -> tuple[str, float] | None:
        """Throughput at the given time per repetition: TFLOP/s for compute work, else GB/s."""
        if self.flops:
            return "TFLOP/s", self.flops / (median_ms * 1e-3) / 1e12
        if self.bytes:
            return "GB/s", self.bytes / (median_ms * 1e-3) / 1e9
        return None


@dataclass(frozen=True)
class Timing:
    """Samples (ms each), the warm-ups before them and why the repetitions stopped."""

    samples_ms: list[float]
    warmups: int
    stop: str


# The engine's stopping rule (`engine/loop.py`), kept simple: a rate that calibrates predictions should
# not be the median of a fixed count taken while it still moves (clocks ramping up, caches warming).
# A stable kernel stops at MIN_REPS, so the rule costs time only where the median moves, and the
# benchmark's time share bounds it.
WARMUPS = 2
MIN_REPS = 5
MAX_REPS = 100
STABLE_REL = 0.02


class Timer:
    """Times a callable per repetition: CUDA events on a GPU, perf_counter on the CPU (or, with
    `host=True`, perf_counter on any device, the device synchronised before but not after). Repeats
    until the running median moved less than STABLE_REL, MAX_REPS, or `budget_s` once MIN_REPS are in."""

    def __init__(self, device: str, budget_s: float) -> None:
        self.device = device
        self.budget_s = budget_s

    def __call__(self, fn: Callable[[], Any], *, host: bool = False) -> Timing:
        from ctxscope.agent.engine.loop import stable

        for _ in range(WARMUPS):
            fn()
        samples: list[float] = []
        medians: list[float] = []
        stop = f"MAX_REPS {MAX_REPS}"
        start_all = time.perf_counter()
        while len(samples) < MAX_REPS:
            samples.append(self._once(fn, host))
            medians.append(statistics.median(samples))
            if len(samples) < MIN_REPS:
                continue
            if stable(medians, STABLE_REL):
                stop = f"median moved < {STABLE_REL:.0%} at the last sample"
                break
            if time.perf_counter() - start_all >= self.budget_s:
                stop = f"time share of {self.budget_s:.3g} s spent, median not yet stable"
                break
        self._sync()
        return Timing(samples, WARMUPS, stop)

    def _sync(self) -> None:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()

    def _once(self, fn: Callable[[], Any], host: bool) -> float:
        """One sample in ms."""
        import torch

        self._sync()
        if self.device.startswith("cuda") and not host:
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            fn()
            end.record()
            end.synchronize()
            return float(begin.elapsed_time(end))
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3


def _dtype(device: str) -> Any:
    import torch

    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def _timed(what: str, device: str) -> str:
    """What one sample is: one call of `what`, and the clock around it."""
    clock = "CUDA events" if device.startswith("cuda") else "perf_counter"
    return f"one {what}, timed by {clock}, ms"


def gemm(device: str, sizes: Sizes, timer: Timer) -> Figure:
    import torch

    n = sizes.gemm_n
    dtype = _dtype(device)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    fig = Figure(
        "gemm",
        "gemm",
        n,
        f"torch.matmul {n}x{n}x{n} {str(dtype).removeprefix('torch.')}",
        "torch.matmul (cuBLAS)" if device.startswith("cuda") else "torch.matmul (CPU reference)",
        not device.startswith("cuda"),
        flops=2.0 * n**3,
        sample=_timed("matmul", device),
    )
    fig.take(timer(lambda: torch.matmul(a, b)))
    return fig


def stream(device: str, sizes: Sizes, timer: Timer) -> Figure:
    import torch

    n = sizes.stream_elems
    dtype = _dtype(device)
    x = torch.randn(n, device=device, dtype=dtype)
    y = torch.randn(n, device=device, dtype=dtype)
    out = torch.empty_like(x)
    fig = Figure(
        "stream",
        "stream",
        n,
        f"torch.add(x, y, out=z) over {n} {str(dtype).removeprefix('torch.')} elements "
        f"(3 x {x.element_size()} bytes each)",
        "torch.add elementwise" + ("" if device.startswith("cuda") else " (CPU reference)"),
        not device.startswith("cuda"),
        bytes=3.0 * n * x.element_size(),
        sample=_timed("torch.add over all elements", device),
    )
    fig.take(timer(lambda: torch.add(x, y, out=out)))
    return fig


def sdpa(device: str, sizes: Sizes, timer: Timer) -> Figure:
    import torch
    import torch.nn.functional as F

    L, h, d = sizes.sdpa_len, sizes.sdpa_heads, sizes.head_dim
    dtype = _dtype(device)
    q, k, v = (torch.randn(1, h, L, d, device=device, dtype=dtype) for _ in range(3))
    fig = Figure(
        "sdpa",
        "attention",
        L,
        f"scaled_dot_product_attention causal, 1x{h}x{L}x{d}; FLOPs 2*2*L^2*h*d/2 (causal half)",
        "torch SDPA (backend of torch's choice)"
        if device.startswith("cuda")
        else "torch SDPA (CPU reference)",
        not device.startswith("cuda"),
        flops=2.0 * L * L * h * d,
        sample=_timed("attention call", device),
    )
    fig.take(timer(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)))
    return fig


def _mamba_absent(name: str, family: str, size: int, what: str) -> Figure | None:
    """A skipped figure when mamba_ssm does not import: it names no implementation, none ran."""
    try:
        import mamba_ssm  # noqa: F401
    except Exception as exc:  # ImportError, or a CUDA extension that fails to load
        reason = f"mamba_ssm unavailable, {type(exc).__name__}: {exc}"[:400]
        return Figure(name, family, size, what, "", False, absent=reason)
    return None


def selective_scan(device: str, sizes: Sizes, timer: Timer) -> Figure:
    L, D, N = sizes.scan_len, sizes.scan_dim, sizes.state
    what = f"selective scan, batch 1, dim {D}, state {N}, length {L}"
    missing = _mamba_absent("selective_scan", "selective_scan", L, what)
    if missing:
        return missing
    import torch
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn, selective_scan_ref

    cuda = device.startswith("cuda")
    dtype = _dtype(device)
    u, delta = (torch.randn(1, D, L, device=device, dtype=dtype) for _ in range(2))
    A = -torch.rand(D, N, device=device)
    B, C = (torch.randn(1, N, L, device=device, dtype=dtype) for _ in range(2))
    fn = selective_scan_fn if cuda else selective_scan_ref
    elem = u.element_size()
    fig = Figure(
        "selective_scan",
        "selective_scan",
        L,
        f"{what}; bytes = inputs u, delta, B, C and output ({elem} bytes each)",
        "mamba_ssm selective_scan_cuda" if cuda else "mamba_ssm selective_scan_ref (torch reference)",
        not cuda,
        bytes=float(elem * (3 * D * L + 2 * N * L)),
        sample=_timed("selective scan call", device),
    )
    fig.take(timer(lambda: fn(u, delta, A, B, C, delta_softplus=True)))
    return fig


def ssd_chunk_scan(device: str, sizes: Sizes, timer: Timer) -> Figure:
    L, H, P, N = sizes.ssd_len, sizes.ssd_heads, sizes.head_dim, sizes.ssd_state
    what = f"SSD chunk scan, batch 1, {H} heads x {P}, state {N}, chunk 256, length {L}"
    missing = _mamba_absent("ssd_chunk_scan", "ssd_scan", L, what)
    if missing:
        return missing
    import torch

    cuda = device.startswith("cuda")
    dtype = _dtype(device)
    x = torch.randn(1, L, H, P, device=device, dtype=dtype)
    dt = torch.rand(1, L, H, device=device, dtype=torch.float32) * 0.1
    A = -torch.rand(H, device=device)
    B, C = (torch.randn(1, L, 1, N, device=device, dtype=dtype) for _ in range(2))
    # intra-chunk quadratic form plus state passing: 2*L*chunk*H*(N+P) + 4*L*H*P*N FLOPs
    flops = 2.0 * L * 256 * H * (N + P) + 4.0 * L * H * P * N
    if cuda:
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

        def run() -> Any:
            return mamba_chunk_scan_combined(x, dt, A, B, C, chunk_size=256)

        impl = "mamba_ssm triton mamba_chunk_scan_combined (autotuned)"
    else:
        from mamba_ssm.modules.ssd_minimal import ssd_minimal_discrete

        Bh, Ch = B.expand(1, L, H, N), C.expand(1, L, H, N)
        chunk = min(256, L)

        def run() -> Any:
            return ssd_minimal_discrete(x * dt.unsqueeze(-1), A * dt, Bh, Ch, chunk)

        impl = "mamba_ssm ssd_minimal_discrete (torch reference)"
    fig = Figure(
        "ssd_chunk_scan",
        "ssd_scan",
        L,
        f"{what}; FLOPs 2*L*256*H*(N+P) + 4*L*H*P*N",
        impl,
        not cuda,
        flops=flops,
        sample=_timed("chunk-scan call", device),
    )
    fig.take(timer(run))
    return fig


def launch_floor(device: str, sizes: Sizes, timer: Timer) -> Figure:
    """Device time per tiny kernel: a CUDA graph of back-to-back 1-element adds, replayed."""
    n = sizes.tiny_ops
    what = f"{n} one-element adds captured in one CUDA graph, replayed"
    if not device.startswith("cuda"):
        return Figure("launch_floor", "launch_floor", n, what, "", False, absent="no GPU on this device")
    import torch

    x = torch.zeros(1, device=device)
    stream_ = torch.cuda.Stream()
    with torch.cuda.stream(stream_):
        x.add_(1)  # warm the kernel before capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(n):
            x.add_(1)
    sample = f"one replay timed by CUDA events / {n}: ms per kernel"
    fig = Figure("launch_floor", "launch_floor", n, what, "CUDA graph", False, sample=sample)
    fig.take(timer(graph.replay), per=n)
    return fig


def host_per_op(device: str, sizes: Sizes, timer: Timer) -> Figure:
    """Host time to issue one small eager torch op (no synchronisation inside the loop)."""
    import torch

    n = sizes.tiny_ops
    x = torch.zeros(64, device=device)
    cuda = device.startswith("cuda")

    def loop() -> None:
        for _ in range(n):
            x.add_(1)

    fig = Figure(
        "host_per_op",
        "host",
        n,
        f"{n} eager in-place adds on a 64-element tensor",
        "torch eager dispatch" + (" + CUDA launch" if cuda else " (CPU)"),
        False,
        sample=f"perf_counter around {n} adds (device synced before, not inside) / {n}: ms per op",
    )
    fig.take(timer(loop, host=True), per=n)
    return fig


BENCHMARKS: tuple[Callable[[str, Sizes, Timer], Figure], ...] = (
    gemm,
    stream,
    selective_scan,
    ssd_chunk_scan,
    sdpa,
    launch_floor,
    host_per_op,
)
