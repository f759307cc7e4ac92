"""Microbenchmarks, one per kernel family, plus the GPU launch floor and the host cost per eager op.

Each returns a `Figure`: raw per-repetition samples with unit and method, and the analytic work
(FLOPs, bytes) of one repetition so that a rate (TFLOP/s, GB/s) follows. On the CPU the same torch
operations run at small sizes and are labelled `reference`: they measure the CPU, not a GPU kernel.
"""

from __future__ import annotations

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
    """One calibration figure: what ran, its samples (ms per repetition) and the work per repetition."""

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

    def rate(self, median_ms: float) -> tuple[str, float] | None:
        """Throughput at the given time per repetition: TFLOP/s for compute work, else GB/s."""
        if self.flops:
            return "TFLOP/s", self.flops / (median_ms * 1e-3) / 1e12
        if self.bytes:
            return "GB/s", self.bytes / (median_ms * 1e-3) / 1e9
        return None


class Timer:
    """Times a callable per repetition: CUDA events on a GPU, perf_counter on the CPU."""

    def __init__(self, device: str, budget_s: float) -> None:
        self.device = device
        self.budget_s = budget_s

    def __call__(self, fn: Callable[[], Any], *, warmup: int = 2, reps: int = 10) -> list[float]:
        import torch

        for _ in range(warmup):
            fn()
        cuda = self.device.startswith("cuda")
        if cuda:
            torch.cuda.synchronize()
        samples: list[float] = []
        start_all = time.perf_counter()
        while len(samples) < reps and (len(samples) < 3 or time.perf_counter() - start_all < self.budget_s):
            if cuda:
                begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                begin.record()
                fn()
                end.record()
                end.synchronize()
                samples.append(float(begin.elapsed_time(end)))
            else:
                t0 = time.perf_counter()
                fn()
                samples.append((time.perf_counter() - t0) * 1e3)
        return samples


def _dtype(device: str) -> Any:
    import torch

    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def _timing(device: str) -> str:
    return (
        "CUDA events around each repetition" if device.startswith("cuda") else "perf_counter per repetition"
    )


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
        f"torch.matmul {n}x{n}x{n} {str(dtype).removeprefix('torch.')}; {_timing(device)}",
        "torch.matmul (cuBLAS)" if device.startswith("cuda") else "torch.matmul (CPU reference)",
        not device.startswith("cuda"),
        flops=2.0 * n**3,
    )
    fig.samples_ms = timer(lambda: torch.matmul(a, b))
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
        f"(3 x {x.element_size()} bytes each); {_timing(device)}",
        "torch.add elementwise" + ("" if device.startswith("cuda") else " (CPU reference)"),
        not device.startswith("cuda"),
        bytes=3.0 * n * x.element_size(),
    )
    fig.samples_ms = timer(lambda: torch.add(x, y, out=out))
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
        f"scaled_dot_product_attention causal, 1x{h}x{L}x{d}; FLOPs 2*2*L^2*h*d/2 (causal half); "
        f"{_timing(device)}",
        "torch SDPA (backend of torch's choice)"
        if device.startswith("cuda")
        else "torch SDPA (CPU reference)",
        not device.startswith("cuda"),
        flops=2.0 * L * L * h * d,
    )
    fig.samples_ms = timer(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))
    return fig


def _mamba_absent(name: str, family: str, size: int, what: str) -> Figure | None:
    try:
        import mamba_ssm  # noqa: F401
    except Exception as exc:  # ImportError, or a CUDA extension that fails to load
        return Figure(
            name, family, size, what, "mamba_ssm", False, absent=f"{type(exc).__name__}: {exc}"[:400]
        )
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
        f"{what}; bytes = inputs u, delta, B, C and output ({elem} bytes each); {_timing(device)}",
        "mamba_ssm selective_scan_cuda" if cuda else "mamba_ssm selective_scan_ref (torch reference)",
        not cuda,
        bytes=float(elem * (3 * D * L + 2 * N * L)),
    )
    fig.samples_ms = timer(lambda: fn(u, delta, A, B, C, delta_softplus=True))
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
        f"{what}; FLOPs 2*L*256*H*(N+P) + 4*L*H*P*N; {_timing(device)}",
        impl,
        not cuda,
        flops=flops,
    )
    fig.samples_ms = timer(run)
    return fig


def launch_floor(device: str, sizes: Sizes, timer: Timer) -> Figure:
    """Device time per tiny kernel: a CUDA graph of back-to-back 1-element adds, replayed."""
    n = sizes.tiny_ops
    what = f"{n} one-element adds captured in one CUDA graph, replayed; ms per kernel"
    if not device.startswith("cuda"):
        return Figure(
            "launch_floor", "launch_floor", n, what, "CUDA graph", False, absent="no GPU on this device"
        )
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
    fig = Figure(
        "launch_floor", "launch_floor", n, f"{what}; CUDA events around each replay", "CUDA graph", False
    )
    fig.samples_ms = [t / n for t in timer(graph.replay)]
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

    samples: list[float] = []
    loop()
    for _ in range(7):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        loop()
        samples.append((time.perf_counter() - t0) * 1e3 / n)
    if cuda:
        torch.cuda.synchronize()
    return Figure(
        "host_per_op",
        "host",
        n,
        f"perf_counter around {n} eager in-place adds on a 64-element tensor, no sync inside; ms per op",
        "torch eager dispatch" + (" + CUDA launch" if cuda else " (CPU)"),
        False,
        samples_ms=samples,
    )


BENCHMARKS: tuple[Callable[[str, Sizes, Timer], Figure], ...] = (
    gemm,
    stream,
    selective_scan,
    ssd_chunk_scan,
    sdpa,
    launch_floor,
    host_per_op,
)
