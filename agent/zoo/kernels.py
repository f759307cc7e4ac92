"""Which implementation runs the hot operations: native mamba_ssm, transformers with the mamba_ssm /
causal_conv1d kernels, or transformers' pure-PyTorch fallback.

transformers has bound these kernels in three ways, all read here from the modeling module itself:
- 5.24 (this layout's first release not checked): each kernel function is wrapped when the module is
  imported; the wrapper holds the package kernel when that package imports, else the torch reference
  (`is_new_implementation` in its closure);
- from 5.3 (seen in 5.5): the mixer's `__init__` lazy-loads the kernels into module globals (None when
  absent) and sets `is_fast_path_available`; the forward takes the kernels only for CUDA tensors;
- older: the same globals and flag, set at import.
Read the module after the model is built, so that lazily loaded kernels are seen.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType

import torch

from ctxscope.agent.packages import KERNEL_PACKAGES, installed_version
from ctxscope.agent.zoo.spec import ZooError

# hot operation -> (package, module inside it, function) that transformers resolves for it, per SSM kind
_OPS: dict[str, dict[str, tuple[tuple[str, str, str], ...]]] = {
    "mamba1": {
        "ssm_scan": (("mamba_ssm", "ops.selective_scan_interface", "selective_scan_fn"),),
        "conv1d": (("causal_conv1d", "", "causal_conv1d_fn"),),
        "ssm_step": (
            ("mamba_ssm", "ops.triton.selective_state_update", "selective_state_update"),
            ("causal_conv1d", "", "causal_conv1d_update"),
        ),
    },
    "mamba2": {
        "ssm_scan": (("mamba_ssm", "ops.triton.ssd_combined", "mamba_chunk_scan_combined"),),
        "conv1d": (("causal_conv1d", "", "causal_conv1d_fn"),),
        "ssm_step": (
            ("mamba_ssm", "ops.triton.selective_state_update", "selective_state_update"),
            ("causal_conv1d", "", "causal_conv1d_update"),
        ),
    },
}
_LABELS = {
    "mamba1": {
        "ssm_scan": "mamba_ssm selective_scan_cuda",
        "conv1d": "causal_conv1d cuda",
        "ssm_step": "mamba_ssm triton selective_state_update + causal_conv1d_update",
    },
    "mamba2": {
        "ssm_scan": "mamba_ssm triton SSD chunk scan",
        "conv1d": "causal_conv1d cuda",
        "ssm_step": "mamba_ssm triton selective_state_update + causal_conv1d_update",
    },
}

# model_type -> the SSM mixer it uses (None: no SSM layers)
SSM_KIND: dict[str, str | None] = {
    "qwen2": None,
    "llama": None,
    "phi3": None,
    "gpt_neo": None,
    "mamba": "mamba1",
    "jamba": "mamba1",
    "mamba2": "mamba2",
    "falcon_h1": "mamba2",
    "zamba2": "mamba2",
    "bamba": "mamba2",
    "nemotron_h": "mamba2",
    "granitemoehybrid": "mamba2",
}


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


def _has_function(package: str, inner: str, name: str) -> bool:
    module = f"{package}.{inner}" if inner else package
    if import_error(module) is not None:
        return False
    return callable(getattr(importlib.import_module(module), name, None))


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


def _modeling_module(model_type: str) -> ModuleType:
    return importlib.import_module(f"transformers.models.{model_type}.modeling_{model_type}")


def resolved_functions(model_type: str) -> dict[str, bool]:
    """Kernel function name -> whether the imported modeling module bound the package kernel (True) or its
    torch reference (False), read from the wrappers transformers 5.24 puts around those functions."""
    resolved: dict[str, bool] = {}
    for value in vars(_modeling_module(model_type)).values():
        code = getattr(value, "__code__", None)
        if code is None or not {"func_name", "is_new_implementation"} <= set(code.co_freevars):
            continue
        cells = dict(zip(code.co_freevars, (cell.cell_contents for cell in value.__closure__), strict=True))
        resolved[cells["func_name"]] = bool(cells["is_new_implementation"])
    return resolved


def _bound(module: ModuleType, resolved: dict[str, bool], package: str, inner: str, name: str) -> bool:
    """Whether the modeling module will call the package's kernel `name`."""
    if name in resolved:
        return resolved[name]
    if name in vars(module):  # a module global: the kernel itself, or None when it could not be loaded
        return vars(module)[name] is not None
    return _has_function(package, inner, name)


def transformers_plan(model_type: str, device: torch.device) -> KernelPlan:
    """What transformers will run for the SSM operations of `model_type` on `device` (read it after building
    the model: some transformers versions load the kernels in the mixer's constructor)."""
    if model_type not in SSM_KIND:
        raise ZooError(f"no kernel rules for model_type {model_type!r}")
    kind = SSM_KIND[model_type]
    if kind is None:
        return KernelPlan({})
    module = _modeling_module(model_type)
    resolved = resolved_functions(model_type)
    flag = vars(module).get("is_fast_path_available")  # all-or-nothing switch of the older layouts
    on_cuda = device.type == "cuda"
    implementation: dict[str, str] = {}
    missing: set[str] = set()
    for op, functions in _OPS[kind].items():
        absent = [
            f"{pkg}.{name}"
            for pkg, inner, name in functions
            if not _bound(module, resolved, pkg, inner, name)
        ]
        if flag is not None and not flag and not absent:
            absent = ["mamba_ssm + causal_conv1d (is_fast_path_available is False)"]
        label = f"{_LABELS[kind][op]} (transformers)"
        if absent:
            implementation[op] = TORCH_FALLBACK
            missing.update(absent)
        elif on_cuda:
            implementation[op] = label
        elif flag is not None:
            implementation[op] = TORCH_FALLBACK  # these layouts take the kernels only for CUDA tensors
            missing.add("CUDA device")
        else:
            # transformers 5.24 would hand non-CUDA tensors to CUDA/Triton kernels: not a path that runs
            implementation[op] = f"{label} on {device.type}: unsupported"
            missing.add("CUDA device")
    return KernelPlan(implementation, sorted(missing))


def native_plan(model_type: str) -> KernelPlan:
    """What mamba_ssm's MambaLMHeadModel runs (on CUDA) for a pure Mamba / Mamba-2 model."""
    conv = _has_function("causal_conv1d", "", "causal_conv1d_fn")
    missing = [] if conv else ["causal_conv1d.causal_conv1d_fn"]
    if model_type == "mamba":
        scan = (
            "mamba_ssm mamba_inner_fn (fused conv + selective_scan_cuda)"
            if conv
            else "mamba_ssm selective_scan_cuda"
        )
    elif model_type == "mamba2":
        scan = (
            "mamba_ssm mamba_split_conv1d_scan_combined (triton SSD)"
            if conv
            else "mamba_ssm mamba_chunk_scan_combined (triton SSD)"
        )
    else:
        raise ZooError(f"model_type {model_type!r} has no native mamba_ssm build")
    return KernelPlan(
        {
            "ssm_scan": scan,
            "conv1d": "causal_conv1d cuda" if conv else "torch conv1d",
            "ssm_step": "mamba_ssm triton selective_state_update",
        },
        missing,
    )
