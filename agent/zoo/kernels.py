"""Which implementation runs the hot operations: native mamba_ssm, transformers with the mamba_ssm /
causal_conv1d kernels, or transformers' pure-PyTorch fallback, decided from evidence of the call.

After a model is built, `observed_plan` runs a short probe on it (an 8-token prefill with a cache, then
one decode step) while `CallEvidence` watches which kernel-package functions are entered. An operation is
recorded as a kernel only when that kernel was called; otherwise as the torch fallback, with what was not
called listed in `missing`. Reading which names a modeling module bound proved wrong twice (transformers
5.24 wrapped the kernels at import; 5.25 with the `kernels` package swaps in modules whose closures say
nothing), so nothing here reads transformers' internals.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch

from ctxscope.agent.packages import KERNEL_PACKAGES, installed_version
from ctxscope.agent.zoo.calls import CallEvidence
from ctxscope.agent.zoo.hfcache import hf_cache, hf_cache_kwarg
from ctxscope.agent.zoo.spec import Runtime

Phase = Literal["prefill", "step"]
SsmKind = Literal["mamba1", "mamba2"]  # the SSM mixer an architecture uses: which kernels its rules watch
PHASES: tuple[Phase, Phase] = ("prefill", "step")
PROBE_TOKENS = 8
_WATCHED = ("mamba_ssm", "causal_conv1d")


@dataclass(frozen=True)
class _Part:
    """One kernel an operation needs: the package, the file its entry points live in (None: any file of
    the package or its C extension), the entry point named when it is missing, and what runs when called."""

    package: str
    file: str | None
    entry: str
    label: str


_SCAN_FILES = {"mamba1": "ops/selective_scan_interface.py", "mamba2": "ops/triton/ssd_combined.py"}
# scan entry points, most fused first: the label names the outermost one that was called
_SCAN_LABELS = {
    "mamba_split_conv1d_scan_combined": "mamba_ssm mamba_split_conv1d_scan_combined (triton SSD)",
    "mamba_inner_fn": "mamba_ssm mamba_inner_fn (fused conv + selective_scan_cuda)",
    "mamba_chunk_scan_combined": "mamba_ssm mamba_chunk_scan_combined (triton SSD)",
    "selective_scan_fn": "mamba_ssm selective_scan_fn (selective_scan_cuda)",
}
_CONV = _Part("causal_conv1d", None, "causal_conv1d_fn", "causal_conv1d cuda")
_STEP = (
    _Part(
        "mamba_ssm",
        "ops/triton/selective_state_update.py",
        "selective_state_update",
        "mamba_ssm triton selective_state_update",
    ),
    _Part("causal_conv1d", None, "causal_conv1d_update", "causal_conv1d_update"),
)
_SCAN_ENTRY = {"mamba1": "selective_scan_fn", "mamba2": "mamba_chunk_scan_combined"}


def _rules(kind: SsmKind) -> dict[str, tuple[Phase, tuple[_Part, ...]]]:
    """Operation -> (the probe phase that runs it, the kernels it needs)."""
    scan = _Part("mamba_ssm", _SCAN_FILES[kind], _SCAN_ENTRY[kind], "")
    return {"ssm_scan": ("prefill", (scan,)), "conv1d": ("prefill", (_CONV,)), "ssm_step": ("step", _STEP)}


TORCH_FALLBACK = "transformers torch fallback"


class KernelPathError(RuntimeError):
    """The fast kernels were required but the run would take a slower fallback path."""


@dataclass(frozen=True)
class KernelPlan:
    implementation: dict[str, str]
    missing: list[str] = field(default_factory=list)  # what the fast path lacks; empty when it is taken


def import_error(module: str) -> str | None:
    """None when `module` imports, else the reason (kernel packages can fail with non-ImportErrors)."""
    try:
        importlib.import_module(module)
    except Exception as exc:  # a CUDA extension built for another torch raises OSError or RuntimeError
        return f"{type(exc).__name__}: {exc}"
    return None


def kernel_availability() -> dict[str, str]:
    """Installed version of each kernel-relevant package, or why it is unusable; plus the CUDA device."""
    report: dict[str, str] = {}
    for package in KERNEL_PACKAGES:
        error = import_error(package)
        if error is None:
            report[package] = installed_version(package) or "importable (version unknown)"
        else:
            report[package] = f"unusable ({error})"
    report["cuda"] = (
        f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"
        if torch.cuda.is_available()
        else "not available"
    )
    return report


def _label(part: _Part, evidence: CallEvidence) -> str:
    if part.file in _SCAN_FILES.values():
        called = evidence.functions(part.package, part.file or "")
        return next((label for name, label in _SCAN_LABELS.items() if name in called), part.entry)
    return part.label


def plan_from_evidence(
    kind: SsmKind, evidence: dict[Phase, CallEvidence], runtime: Runtime, device: torch.device
) -> KernelPlan:
    """The implementation of each SSM operation, from what the probe's phases called."""
    implementation: dict[str, str] = {}
    missing: set[str] = set()
    suffix = " (transformers)" if runtime == "transformers" else ""
    for op, (phase, parts) in _rules(kind).items():
        seen = evidence[phase]
        called = [part for part in parts if seen.entered(part.package, part.file)]
        missing.update(f"{part.package}.{part.entry}" for part in parts if part not in called)
        if not called:
            implementation[op] = TORCH_FALLBACK
        else:
            labels = [_label(p, seen) if p in called else f"torch {p.entry} fallback" for p in parts]
            implementation[op] = " + ".join(labels) + suffix
    if missing and device.type != "cuda":
        missing.add("CUDA device")
    return KernelPlan(implementation, sorted(missing))


def compiled_step_label(label: str, packages: set[str]) -> str:
    """`ssm_step` for a compiled decode step: the eager probe's label (`plan_from_evidence`), each kernel
    in it that the compiled step's graph does not hold (`packages`: the packages of its operations,
    `engine.graphops`) named as torch's instead, which inductor compiled."""
    suffix = " (transformers)" if label.endswith(" (transformers)") else ""
    named = []
    for text in label.removesuffix(suffix).split(" + "):
        part = next((part for part in _STEP if part.label == text), None)
        if part is not None and not any(package.startswith(part.package) for package in packages):
            text = f"torch {part.entry} (compiled by inductor)"
        named.append(text)
    return " + ".join(named) + suffix


def _probe_transformers(module: torch.nn.Module, ids: torch.Tensor) -> tuple[Callable[[], object], ...]:
    state: dict[str, object] = {}

    def prefill() -> None:
        output = module(input_ids=ids, use_cache=True, logits_to_keep=1)
        state["cache"] = hf_cache(output)
        state["token"] = output.logits[:, -1:].argmax(-1)

    def step() -> None:
        cache = {hf_cache_kwarg(module): state["cache"]}
        module(input_ids=state["token"], use_cache=True, logits_to_keep=1, **cache)

    return prefill, step


def _probe_native(module: torch.nn.Module, ids: torch.Tensor) -> tuple[Callable[[], object], ...]:
    from mamba_ssm.utils.generation import InferenceParams

    params = InferenceParams(max_seqlen=ids.shape[1] + 1, max_batch_size=1)
    state: dict[str, torch.Tensor] = {}

    def prefill() -> None:
        state["token"] = module(ids, inference_params=params, num_last_tokens=1).logits[:, -1:].argmax(-1)
        params.seqlen_offset += ids.shape[1]

    def step() -> None:
        position = torch.full((1, 1), ids.shape[1], dtype=torch.long, device=ids.device)
        module(state["token"], position_ids=position, inference_params=params, num_last_tokens=1)

    return prefill, step


def observed_plan(
    module: torch.nn.Module, kind: SsmKind | None, runtime: Runtime, device: torch.device
) -> KernelPlan:
    """What the built model runs for its SSM operations of `kind`, observed in a short prefill + decode
    step.

    Token ids 1..8 (no random draw, so the caller's RNG state is untouched); attention-only models
    (`kind` None) are not probed (they have no SSM operations).
    """
    if kind is None:
        return KernelPlan({})
    ids = torch.arange(1, PROBE_TOKENS + 1, device=device).unsqueeze(0)
    phases = (_probe_native if runtime == "mamba_ssm" else _probe_transformers)(module, ids)
    evidence: dict[Phase, CallEvidence] = {}
    with torch.inference_mode():
        for phase, run in zip(PHASES, phases, strict=True):
            with CallEvidence(_WATCHED) as seen:
                run()
            evidence[phase] = seen
    return plan_from_evidence(kind, evidence, runtime, device)


def causal_conv1d_usable() -> bool:
    """Whether causal_conv1d imports with its `causal_conv1d_fn` (mamba_ssm's fused Mamba-2 path needs it)."""
    if import_error("causal_conv1d") is not None:
        return False
    return callable(getattr(importlib.import_module("causal_conv1d"), "causal_conv1d_fn", None))
