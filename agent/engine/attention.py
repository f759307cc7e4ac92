"""SDPA with native grouped-query attention for transformers models, on a backend calibrated per device.

transformers' own sdpa path copies keys and values to every query head (`repeat_kv`) whenever a mask is
passed, which is every step of a static-cache decode; at long context that copy costs more than the
attention itself. This path hands SDPA the grouped keys and values with `enable_gqa=True` and runs it
on the backend (cuDNN, flash, memory-efficient, math) that a short check at the model's shape found
fastest among those that agree with a float32 reference. It is registered in transformers'
`AttentionInterface` (and its mask twin) under `ATTENTION_NAME`; `"transformers-sdpa"` keeps
transformers' default.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from ctxscope.agent.zoo.architectures import architecture

AttentionMode = Literal["sdpa-gqa", "transformers-sdpa"]
ATTENTION_MODES: tuple[AttentionMode, ...] = ("sdpa-gqa", "transformers-sdpa")
ATTENTION_NAME = "ctxscope_sdpa_gqa"
CANDIDATES = (
    SDPBackend.CUDNN_ATTENTION,
    SDPBackend.FLASH_ATTENTION,
    SDPBackend.EFFICIENT_ATTENTION,
    SDPBackend.MATH,
)
# largest |output - float32 reference| a backend may show, per input dtype (outputs are O(1))
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 5e-3}

Phase = Literal["prefill", "decode"]


@dataclass
class BackendChoice:
    """The backend each phase runs on, and what the calibration saw for every candidate."""

    prefill: SDPBackend | None = None  # None: SDPA's own dispatch (not calibrated)
    decode: SDPBackend | None = None
    trials: dict[str, str] = field(default_factory=dict)  # "phase/backend" -> "12.3 us" or why not
    timing: dict[str, str] = field(default_factory=dict)  # phase -> how its candidates were timed

    def record(self) -> dict[str, str]:
        """The keys this path adds to a result's `implementation`: what ran and how it was chosen, the
        same in every run that chose alike (the trials' own times go in `details`, see `trials_detail`)."""
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        out = {
            "attention_gqa": "native (scaled_dot_product_attention enable_gqa=True, no K/V copy)",
            "attention_backend_prefill": _name(self.prefill),
            "attention_backend_decode": _name(self.decode),
        }
        if cudnn is not None:
            out["cudnn_version"] = str(cudnn)
        out.update({f"attention_trial_timing_{phase}": how for phase, how in sorted(self.timing.items())})
        return out

    def trials_detail(self) -> dict[str, str]:
        """Each candidate's trial ("phase/backend" -> its time and difference, or why it was left out),
        for a result's `details["attention_trials"]`: times differ from run to run, so they stay out of
        the implementation that series pool by."""
        return dict(sorted(self.trials.items()))


_CHOICE = BackendChoice()


def _name(backend: SDPBackend | None) -> str:
    return "sdpa dispatch (uncalibrated)" if backend is None else backend.name.lower()


def sdpa_gqa_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature: (batch, heads, q, dim) in, (batch, q, heads, dim) out."""
    if kwargs.get("position_bias") is not None:
        raise ValueError(f"{ATTENTION_NAME} does not take a position_bias; use attention='transformers-sdpa'")
    q_length, kv_length = query.shape[2], key.shape[2]
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    causal = bool(q_length > 1 and attention_mask is None and causal)
    if causal and kv_length > q_length:  # prefill into an empty static cache: the rest is unwritten
        key, value = key[:, :, :q_length], value[:, :, :q_length]
    if attention_mask is not None and attention_mask.dtype == torch.bool:
        # float masks keep cuDNN's GQA kernel (bool masks measured twice as slow with enable_gqa)
        attention_mask = torch.zeros((), dtype=query.dtype, device=query.device).masked_fill(
            ~attention_mask, torch.finfo(query.dtype).min
        )
    backend = _CHOICE.prefill if q_length > 1 else _CHOICE.decode
    gqa = query.shape[1] != key.shape[1]
    if backend is None:
        out = _sdpa(query, key, value, attention_mask, dropout, scaling, causal, gqa)
    else:
        with sdpa_kernel([backend]):
            out = _sdpa(query, key, value, attention_mask, dropout, scaling, causal, gqa)
    return out.transpose(1, 2).contiguous(), None


def _sdpa(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    dropout: float,
    scale: float | None,
    causal: bool,
    gqa: bool,
) -> torch.Tensor:
    return torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=mask, dropout_p=dropout, scale=scale, is_causal=causal, enable_gqa=gqa
    )


def register() -> str:
    """Register the path with transformers (idempotent); the name to pass as `attn_implementation`."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION_NAME, sdpa_gqa_forward)
    AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)
    return ATTENTION_NAME


def attn_implementation(mode: AttentionMode, model_type: str) -> str | None:
    """What to ask transformers for: this path's name for `sdpa-gqa` on a model type whose architecture
    routes its attention through the interface, else None (transformers' default)."""
    if mode not in ATTENTION_MODES:
        raise ValueError(f"attention must be one of {', '.join(ATTENTION_MODES)}, got {mode!r}")
    if mode == "sdpa-gqa" and architecture(model_type).attention_interface:
        return register()
    return None


@dataclass(frozen=True)
class Shape:
    heads: int
    kv_heads: int
    head_dim: int


def model_shape(module: torch.nn.Module) -> Shape | None:
    """The query/key-value head counts and head dim of the first attention layer, None without one."""
    for layer in module.modules():
        groups = getattr(layer, "num_key_value_groups", None)
        head_dim = getattr(layer, "head_dim", None)
        config = getattr(layer, "config", None)
        heads = getattr(config, "num_attention_heads", None)
        if isinstance(groups, int) and isinstance(head_dim, int) and isinstance(heads, int):
            return Shape(heads, heads // groups, head_dim)
    return None


def _reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Attention in float32 with K/V repeated by hand: what every backend must agree with."""
    groups = q.shape[1] // k.shape[1]
    k32 = k.float().repeat_interleave(groups, dim=1)
    v32 = v.float().repeat_interleave(groups, dim=1)
    scores = q.float() @ k32.transpose(-1, -2) / q.shape[-1] ** 0.5
    if mask is None:
        n = q.shape[2]
        scores = scores.masked_fill(
            torch.ones(n, n, dtype=torch.bool, device=q.device).triu(1), float("-inf")
        )
    else:
        scores = scores + mask.float()
    return torch.softmax(scores, dim=-1) @ v32


def _run_on(
    backend: SDPBackend,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    gqa: bool,
) -> torch.Tensor:
    with sdpa_kernel([backend]):
        return _sdpa(q, k, v, mask, 0.0, None, mask is None, gqa)


def _wall_us(fn: Any, device: torch.device, reps: int) -> float:
    """Mean microseconds per eager call: wall clock over `reps` calls, synchronized at both ends."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter_ns()
    for _ in range(reps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter_ns() - started) / reps / 1e3


def _graph_us(fn: Any, reps: int) -> float:
    """Mean microseconds per call of `reps` calls captured in one CUDA graph and replayed (CUDA events):
    how a graph-replayed decode step runs the kernel, without the eager call's host cost."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(reps):
            fn()
    graph.replay()  # warm
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1e3 / reps


def _has_graphs(device: torch.device) -> bool:
    return device.type == "cuda"


def _timing(in_graph: bool, reps: int) -> str:
    """How `calibrate` timed a phase's candidates (the implementation's `attention_trial_timing_<phase>`)."""
    if in_graph:
        return f"mean of {reps} calls replayed from one CUDA graph (CUDA events), as graph decode runs them"
    return f"mean of {reps} eager calls (wall clock, synchronized at both ends)"


def _inputs(
    shape: Shape, phase: Phase, length: int, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    generator = torch.Generator(device=device).manual_seed(0)
    q_len = length if phase == "prefill" else 1
    q = torch.randn(1, shape.heads, q_len, shape.head_dim, generator=generator, device=device, dtype=dtype)
    k = torch.randn(
        1, shape.kv_heads, length, shape.head_dim, generator=generator, device=device, dtype=dtype
    )
    v = torch.randn(
        1, shape.kv_heads, length, shape.head_dim, generator=generator, device=device, dtype=dtype
    )
    mask = None
    if phase == "decode":  # as the static-cache decode passes it: a float mask over the whole buffer
        mask = torch.zeros(1, 1, 1, length, device=device, dtype=dtype)
        mask[..., length - length // 8 :] = torch.finfo(dtype).min
    return q, k, v, mask


def calibrate(
    shape: Shape,
    dtype: torch.dtype,
    device: torch.device,
    *,
    length: int,
    reps: int = 10,
    decode_in_graph: bool = True,
) -> BackendChoice:
    """Time every candidate backend at `shape` for one prefill of `length` tokens and one decode step at
    `length` cached positions; keep the fastest that agrees with the float32 reference. Prefill is
    timed by eager calls, as the engine runs it; decode, on a GPU with `decode_in_graph`, replayed from
    a CUDA graph as the graph decode paths run it (an eager call's host cost, up to several times the
    kernel's, would rank the backends by their host code). A backend that cannot be captured is left
    out, saying so; if no correct one can be, decode is timed by eager calls instead, and the timing
    says why. Sets the choice this path runs on (in this process) and returns it."""
    choice = BackendChoice()
    with torch.inference_mode():
        for phase in ("prefill", "decode"):
            in_graph = phase == "decode" and decode_in_graph and _has_graphs(device)
            choice.timing[phase] = _timing(in_graph, reps)
            best = _fastest_correct(choice, phase, shape, dtype, device, length, reps, in_graph)
            if best is None and in_graph:  # none both correct and capturable: time them eagerly
                choice.timing[phase] = f"{_timing(False, reps)}; no correct backend captured in a CUDA graph"
                best = _fastest_correct(choice, phase, shape, dtype, device, length, reps, False)
            if best is None:
                raise RuntimeError(f"no SDPA backend is correct for {phase} at {shape} on {device}")
            if phase == "prefill":
                choice.prefill = best
            else:
                choice.decode = best
    _CHOICE.prefill, _CHOICE.decode = choice.prefill, choice.decode
    _CHOICE.trials, _CHOICE.timing = dict(choice.trials), dict(choice.timing)
    return choice


def _fastest_correct(
    choice: BackendChoice,
    phase: Phase,
    shape: Shape,
    dtype: torch.dtype,
    device: torch.device,
    length: int,
    reps: int,
    in_graph: bool,
) -> SDPBackend | None:
    """One phase's trial: each candidate checked against the float32 reference, the correct ones timed
    (replayed from a CUDA graph, or by eager calls); each outcome noted in `choice.trials`. The fastest
    correct one, or None."""
    q, k, v, mask = _inputs(shape, phase, length, dtype, device)
    want = _reference(q, k, v, mask)
    tolerance = TOLERANCE.get(dtype, 3e-2)
    gqa = shape.heads != shape.kv_heads
    best: tuple[float, SDPBackend] | None = None
    for backend in CANDIDATES:
        label = f"{phase}/{backend.name.lower()}"
        run = functools.partial(_run_on, backend, q, k, v, mask, gqa)
        try:
            diff = float((run().float() - want).abs().max())  # also the warm-up
        except RuntimeError as exc:  # no kernel of this backend for these inputs
            choice.trials[label] = f"unavailable ({type(exc).__name__})"
            continue
        if not diff <= tolerance:
            choice.trials[label] = f"wrong: max |diff| {diff:.3g} > {tolerance:g}"
            continue
        try:
            took = _graph_us(run, reps) if in_graph else _wall_us(run, device, reps)
        except RuntimeError as exc:
            why = f"{type(exc).__name__}: {exc}"[:160]
            choice.trials[label] = f"not capturable in a CUDA graph ({why})"
            continue
        choice.trials[label] = f"{took:.1f} us, max |diff| {diff:.2g}"
        if best is None or took < best[0]:
            best = (took, backend)
    return None if best is None else best[1]


def reset() -> None:
    """Back to SDPA's own dispatch (no calibrated backend)."""
    _CHOICE.prefill = _CHOICE.decode = None
    _CHOICE.trials, _CHOICE.timing = {}, {}
