"""Build a zoo entry as a runnable torch module with the builder its architecture names (architectures.py).

Random weights by default (latency, memory and energy do not depend on weight values); real weights only
from a local path. Every load states who runs the forward and which implementation each hot operation
takes, observed in a short probe forward of the built model (kernels.observed_plan).
"""

from __future__ import annotations

import torch

from ctxscope.agent.zoo.architectures import architecture
from ctxscope.agent.zoo.builders import LoadedModel, LoadRequest
from ctxscope.agent.zoo.spec import ModelSpec, ZooError, get_spec


def load_model(
    name_or_spec: str | ModelSpec,
    *,
    device: str | torch.device,
    dtype: torch.dtype,
    weights: str | None = None,
    prefer_native: bool = True,
    require_fast_kernels: bool = False,
    attn_implementation: str | None = None,
) -> LoadedModel:
    """Build the entry on `device` in `dtype`, random-initialised unless `weights` names a local checkpoint.

    Pure Mamba / Mamba-2 entries run on native mamba_ssm when `prefer_native`, CUDA and mamba_ssm allow it,
    else on transformers. `require_fast_kernels` raises KernelPathError instead of taking a torch fallback.
    `weights` must match the runtime: a transformers checkpoint folder (for Mamba, the state-spaces/*-hf
    format), or for native mamba_ssm the original folder (config.json + pytorch_model.bin); either way the
    entry's architecture is built and the weights must fit it.
    """
    spec = get_spec(name_or_spec) if isinstance(name_or_spec, str) else name_or_spec
    if spec.unavailable:
        raise ZooError(f"{spec.name} is unavailable: {spec.unavailable}")
    arch = architecture(spec.model_type)
    request = LoadRequest(
        torch.device(device),
        dtype,
        weights,
        prefer_native,
        require_fast_kernels,
        attn_implementation,
        arch.read_config(spec),
        arch.ssm_kind,
    )
    return arch.loader(spec, request)
