"""Roofline figures: analytic FLOPs and bytes of a pass, achieved rates, and their fraction of peak.

The counting rules are METHOD below, which travels with every result."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from ctxscope.agent.zoo.shapes import ArchShape, Attention, Block, Linear, Mamba1, Mamba2, Mlp, Moe

METHOD = """FLOPs count multiply-adds as 2; causal attention counts the lower triangle only; the SSD (Mamba-2)
count follows its chunked algorithm (full chunk blocks, chunk states in and out); a mixture of experts
counts each token through its top-k experts. Bytes are the compulsory DRAM traffic of unfused
operators: every weight read once (of experts, the min(experts, tokens x top-k) that can be picked),
every operator's inputs read once and outputs written once (no reuse across operators), SSM chunk
states in fp32. They are models, not measurements; the measured part is the time they are divided
by.""".replace("\n", " ")

Phase = Literal["prefill", "decode"]
DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}
FP32_STATE_BYTES = 4


@dataclass
class Work:
    """FLOPs and bytes of one pass, by operator class (the classifier's class names)."""

    flops: dict[str, float] = field(default_factory=dict)
    bytes: dict[str, float] = field(default_factory=dict)

    def add(self, cls: str, flops: float, nbytes: float) -> None:
        self.flops[cls] = self.flops.get(cls, 0.0) + flops
        self.bytes[cls] = self.bytes.get(cls, 0.0) + nbytes

    @property
    def total_flops(self) -> float:
        return sum(self.flops.values())

    @property
    def total_bytes(self) -> float:
        return sum(self.bytes.values())


def pass_work(shape: ArchShape, phase: Phase, context_len: int, precision: str, logits: str = "last") -> Work:
    """Analytic work of a prefill of `context_len` tokens, or of one decode step after it."""
    b = DTYPE_BYTES[precision]
    tokens = context_len if phase == "prefill" else 1
    work = Work()
    work.add("elementwise", 0.0, 2 * tokens * shape.hidden * b)  # embedding rows read, written
    for block in shape.blocks:
        _block_work(work, block, phase, tokens, context_len, b)
    work.add("norm", 5 * tokens * shape.hidden * shape.norms, 2 * tokens * shape.hidden * b * shape.norms)
    n_logits = tokens if logits == "all" else 1
    _linear(work, "lm_head", n_logits, shape.hidden, shape.vocab, b)
    return work


def _linear(work: Work, cls: str, tokens: int, in_dim: int, out_dim: int, b: int) -> None:
    work.add(cls, 2.0 * tokens * in_dim * out_dim, b * (in_dim * out_dim + tokens * (in_dim + out_dim)))


def _block_work(work: Work, block: Block, phase: Phase, tokens: int, context_len: int, b: int) -> None:
    if isinstance(block, Linear):
        _linear(work, "gemm", tokens, block.in_dim, block.out_dim, b)
    elif isinstance(block, Mlp):
        for _ in range(2 if block.gated else 1):
            _linear(work, "gemm", tokens, block.hidden, block.intermediate, b)
        _linear(work, "gemm", tokens, block.intermediate, block.hidden, b)
        work.add("elementwise", tokens * block.intermediate * 4.0, 3 * tokens * block.intermediate * b)
    elif isinstance(block, Moe):
        _moe(work, block, tokens, b)
    elif isinstance(block, Attention):
        _attention(work, block, phase, tokens, context_len, b)
    elif isinstance(block, Mamba1):
        _mamba1(work, block, phase, tokens, b)
    else:
        _mamba2(work, block, phase, tokens, b)


def _attention(work: Work, a: Attention, phase: Phase, tokens: int, context_len: int, b: int) -> None:
    q, kv, d = a.q_heads * a.head_dim, a.kv_heads * a.head_dim, a.head_dim
    _linear(work, "gemm", tokens, a.in_dim, q, b)
    _linear(work, "gemm", tokens, a.in_dim, kv, b)
    _linear(work, "gemm", tokens, a.in_dim, kv, b)
    _linear(work, "gemm", tokens, q, a.out_dim, b)
    if a.rotary:
        work.add("rotary", 6.0 * tokens * (q + kv), 2 * tokens * (q + kv) * b)
    if phase == "prefill":
        # QK^T and PV over the causal lower triangle: 2 matmuls x 2 FLOP x T^2/2 x heads x d
        work.add("attention", 2.0 * tokens * tokens * a.q_heads * d, tokens * (2 * q + 2 * kv) * b)
    else:
        work.add("attention", 4.0 * context_len * a.q_heads * d, (2 * context_len * kv + 2 * q) * b)


def _moe(work: Work, m: Moe, tokens: int, b: int) -> None:
    """Router, then each token through top_k experts; an expert's weights are read once if any token
    picks it (at most min(experts, tokens x top_k) experts)."""
    _linear(work, "gemm", tokens, m.hidden, m.experts, b)
    routed = tokens * m.top_k
    matrices = 3 if m.gated else 2
    weights = min(m.experts, routed) * matrices * m.hidden * m.intermediate
    activations = routed * matrices * (m.hidden + m.intermediate)
    work.add("gemm", 2.0 * routed * matrices * m.hidden * m.intermediate, b * (weights + activations))
    work.add("elementwise", routed * m.intermediate * 4.0, 3 * routed * m.intermediate * b)


def _mamba1(work: Work, m: Mamba1, phase: Phase, tokens: int, b: int) -> None:
    _linear(work, "gemm", tokens, m.d_model, 2 * m.d_inner, b)
    _conv1d(work, tokens, m.d_inner, m.d_conv, phase, b)
    _linear(work, "gemm", tokens, m.d_inner, m.dt_rank + 2 * m.d_state, b)
    _linear(work, "gemm", tokens, m.dt_rank, m.d_inner, b)
    # per token, channel and state: exp(dt A), dt B x, h = dA h + dBx, y += C h (9 FLOPs)
    scan_bytes = tokens * (4 * m.d_inner + 2 * m.d_state) * b
    if phase == "decode":
        scan_bytes += 2 * m.d_inner * m.d_state * b
    work.add("ssm_scan", 9.0 * tokens * m.d_inner * m.d_state, scan_bytes)
    _linear(work, "gemm", tokens, m.d_inner, m.d_model, b)


def _mamba2(work: Work, m: Mamba2, phase: Phase, tokens: int, b: int) -> None:
    gn = m.n_groups * m.d_state
    hp = m.n_heads * m.head_dim
    _linear(work, "gemm", tokens, m.d_model, 2 * m.d_inner + 2 * gn + m.n_heads, b)
    _conv1d(work, tokens, m.d_inner + 2 * gn, m.d_conv, phase, b)
    io_bytes = tokens * (2 * m.d_inner + 2 * gn + m.n_heads) * b
    if phase == "prefill":
        chunk = min(m.chunk, tokens)
        # C B^T per group and (L o CB) X per head within chunks; chunk states in and out of them
        flops = 2.0 * tokens * chunk * (gn + hp) + 4.0 * tokens * hp * m.d_state
        states = 2 * math.ceil(tokens / m.chunk) * hp * m.d_state * FP32_STATE_BYTES
        work.add("ssm_scan", flops, io_bytes + states)
    else:
        work.add("ssm_scan", 6.0 * hp * m.d_state, io_bytes + 2 * hp * m.d_state * b)
    work.add("norm", 6.0 * tokens * m.d_inner, 3 * tokens * m.d_inner * b)
    _linear(work, "gemm", tokens, m.d_inner, m.d_model, b)


def _conv1d(work: Work, tokens: int, channels: int, width: int, phase: Phase, b: int) -> None:
    nbytes = (2 * tokens * channels + channels * width) * b
    if phase == "decode":
        nbytes += 2 * channels * width * b
    work.add("conv1d", 2.0 * tokens * channels * width, nbytes)


# ---------------------------------------------------------------------------------------------
# Device peaks and achieved rates


@dataclass(frozen=True)
class Peaks:
    key: str
    bf16_tflops: float
    fp32_tflops: float
    memory_gb_s: float
    source: str

    def flops_per_s(self, precision: str) -> float:
        return (self.fp32_tflops if precision == "fp32" else self.bf16_tflops) * 1e12

    @property
    def bytes_per_s(self) -> float:
        return self.memory_gb_s * 1e9


@cache
def _peak_table() -> dict[str, Any]:
    text = resources.files(__package__).joinpath("peaks.json").read_text(encoding="utf-8")
    return dict(json.loads(text)["devices"])


def peak_keys() -> list[str]:
    """The peak table's entries, by key, in file order (the choices of `agent profile --peaks`)."""
    return list(_peak_table())


def peaks_by_key(key: str) -> Peaks:
    entry = _peak_table()[key]
    return Peaks(key, entry["bf16_tflops"], entry["fp32_tflops"], entry["memory_gb_s"], entry["source"])


def device_description(device: str) -> str:
    """What the peak table matches against: the Jetson model from the device tree, else the GPU name."""
    model = Path("/proc/device-tree/model")
    if model.exists():
        return model.read_text(errors="replace").rstrip("\x00\n")
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(torch.device(device))
    return "cpu"


def find_peaks(description: str) -> Peaks | None:
    """The peaks of the first table entry whose pattern matches the device description, if any."""
    for key, entry in _peak_table().items():
        if re.search(entry["match"], description):
            return peaks_by_key(key)
    return None


def roofline(
    work: Work, time_s: float, peaks: Peaks | None, precision: str, time_method: str
) -> dict[str, Any]:
    """Achieved FLOP/s and bytes/s over `time_s`, with their fraction of the device's peaks."""
    flops, nbytes = work.total_flops, work.total_bytes
    out: dict[str, Any] = {
        "flops": flops,
        "bytes": nbytes,
        "arithmetic_intensity_flop_per_byte": flops / nbytes if nbytes else None,
        "time_s": time_s,
        "time_method": time_method,
        "achieved_tflops": flops / time_s / 1e12,
        "achieved_gb_s": nbytes / time_s / 1e9,
        "flops_by_class": dict(work.flops),
        "bytes_by_class": dict(work.bytes),
        "method": METHOD,
    }
    if peaks is not None:
        peak_flops, peak_bw = peaks.flops_per_s(precision), peaks.bytes_per_s
        ridge = peak_flops / peak_bw
        intensity = flops / nbytes if nbytes else math.inf
        out |= {
            "device_peaks": peaks.key,
            "peak_tflops": peak_flops / 1e12,
            "peak_gb_s": peak_bw / 1e9,
            "peak_source": peaks.source,
            "fraction_of_peak_flops": flops / time_s / peak_flops,
            "fraction_of_peak_bandwidth": nbytes / time_s / peak_bw,
            # the roof that limits at this arithmetic intensity, not a measured bottleneck
            "bound": "compute" if intensity >= ridge else "memory",
            "fraction_of_roofline": (flops / time_s) / min(peak_flops, intensity * peak_bw),
        }
    return out


def class_rooflines(
    work: Work, class_time_ns: Mapping[str, int], peaks: Peaks | None, precision: str
) -> dict[str, dict[str, float]]:
    """Achieved rates per operator class, over that class's device (kernel) time."""
    out: dict[str, dict[str, float]] = {}
    for cls, t_ns in class_time_ns.items():
        if cls not in work.flops or t_ns <= 0:
            continue
        t = t_ns / 1e9
        row = {"achieved_tflops": work.flops[cls] / t / 1e12, "achieved_gb_s": work.bytes[cls] / t / 1e9}
        if peaks is not None:
            row["fraction_of_peak_flops"] = work.flops[cls] / t / peaks.flops_per_s(precision)
            row["fraction_of_peak_bandwidth"] = work.bytes[cls] / t / peaks.bytes_per_s
        out[cls] = row
    return out
