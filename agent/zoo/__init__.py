"""The model zoo: exact public architecture configs, the architecture registry, loading and kernel-path
detection.

Entries (``configs/<name>.json``, indexed with their source in ``configs/index.json``) are the public
config.json of each studied checkpoint; weights are never downloaded.

Public API (imports torch lazily: importing this package does no work)::

    ModelSpec(name, family, model_type, checkpoint, config, source, note, unavailable, tiny)
    list_models(*, include_unavailable=True) -> list[ModelSpec]
    get_spec(name) -> ModelSpec                  # ZooError (a KeyError) naming the known entries
    tiny_spec(name_or_spec) -> ModelSpec         # same architecture shrunk for CPU tests
    spec_for(name, *, tiny) -> ModelSpec         # tiny_spec(name) if tiny else get_spec(name)
    load_model(name_or_spec, *, device, dtype, weights=None, prefer_native=True,
               require_fast_kernels=False, attn_implementation=None) -> LoadedModel
    LoadedModel(spec, module, runtime, implementation, parameters, weight_bytes, logits_kwarg, notes)
        runtime: "mamba_ssm" | "transformers"; implementation: hot op -> what runs it
        ("ssm_scan", "conv1d", "ssm_step", "attention", "loader"); logits_kwarg: pass {logits_kwarg: 1}
        to the forward for last-position logits ("logits_to_keep" or mamba_ssm's "num_last_tokens")
    kernel_availability() -> dict[str, str]      # package -> version or why unusable; "cuda" -> device
    parameter_count(spec) -> int                 # analytic, from the config
    cache_bytes_per_token(spec, dtype) -> int    # KV bytes per token of context (0 for pure SSMs)
    state_bytes(spec, dtype, runtime="transformers") -> int
        # fixed conv + SSM state bytes per sequence; transformers keeps SSM states in float32,
        # mamba_ssm in the model dtype
    ssd_int32_limit_tokens(spec) -> int | None   # longest prompt mamba_ssm's SSD kernels can index
    native_config(spec) -> dict                  # MambaConfig kwargs for mamba_ssm (pure SSM entries)
    hf_config(spec) -> transformers.PretrainedConfig
    arch_shape(spec) -> ArchShape                # blocks in forward order (roofline, cache and state sizes)
    architecture(model_type) -> Architecture     # the one registry entry per model_type: config reader,
        # parameter formula, shape reader, test shrink, loader, SSM kind of the kernel probe
    KernelPathError, ZooError
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "ModelSpec": "spec",
    "ZooError": "spec",
    "list_models": "spec",
    "get_spec": "spec",
    "tiny_spec": "tiny",
    "spec_for": "tiny",
    "LoadedModel": "builders",
    "load_model": "loader",
    "Architecture": "architectures",
    "architecture": "architectures",
    "arch_shape": "architectures",
    "KernelPathError": "kernels",
    "kernel_availability": "kernels",
    "parameter_count": "sizes",
    "cache_bytes_per_token": "sizes",
    "state_bytes": "sizes",
    "ssd_int32_limit_tokens": "sizes",
    "Runtime": "spec",
    "native_config": "hfconfig",
    "hf_config": "architectures",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{module}"), name)
