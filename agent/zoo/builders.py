"""The builders that make a zoo entry a runnable torch module (architectures.py names each model_type's).

Random weights by default (latency, memory and energy do not depend on weight values); real weights only
from a local path. Every load states who runs the forward and which implementation each hot operation
takes, observed in a short probe forward of the built model (kernels.observed_plan).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from ctxscope.agent.zoo.hfconfig import native_config
from ctxscope.agent.zoo.kernels import (
    KernelPathError,
    KernelPlan,
    SsmKind,
    causal_conv1d_usable,
    import_error,
    observed_plan,
)
from ctxscope.agent.zoo.spec import ModelSpec, Runtime

if TYPE_CHECKING:
    from transformers import PretrainedConfig


@dataclass
class LoadedModel:
    spec: ModelSpec
    module: torch.nn.Module  # eval mode, on the device, in the dtype
    runtime: Runtime  # who implements the forward
    implementation: dict[str, str]  # hot operation -> what runs it, plus "loader"
    parameters: int
    weight_bytes: int
    # keyword that asks the forward for last-position logits only: `{logits_kwarg: 1}`
    logits_kwarg: str = "logits_to_keep"
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LoadRequest:
    """What a builder is asked for: the caller's choices, and the entry's transformers config and SSM kind
    as its architecture reads them."""

    device: torch.device
    dtype: torch.dtype
    weights: str | None
    prefer_native: bool
    require_fast_kernels: bool
    attn_implementation: str | None
    config: PretrainedConfig
    ssm_kind: SsmKind | None


Builder = Callable[[ModelSpec, LoadRequest], "LoadedModel"]


def native_unavailable_reason(device: torch.device) -> str | None:
    """None when mamba_ssm's MambaLMHeadModel can run on `device`, else why not."""
    if device.type != "cuda":
        return f"mamba_ssm needs a CUDA device (got {device.type})"
    return import_error("mamba_ssm.models.mixer_seq_simple")


def _check_fast(spec: ModelSpec, plan: KernelPlan, required: bool) -> None:
    if required and plan.missing:
        raise KernelPathError(
            f"{spec.name}: fast kernels required but missing {', '.join(plan.missing)}; "
            f"would run {plan.implementation}"
        )


def _sizes(module: torch.nn.Module) -> tuple[int, int]:
    params = list(module.parameters())  # shared and tied parameters appear once
    return sum(p.numel() for p in params), sum(p.numel() * p.element_size() for p in params)


def build_transformers(spec: ModelSpec, request: LoadRequest) -> LoadedModel:
    """AutoModelForCausalLM from the entry's transformers config."""
    return _transformers_model(spec, request, attention=True, notes=[])


def _transformers_model(
    spec: ModelSpec, request: LoadRequest, *, attention: bool, notes: list[str]
) -> LoadedModel:
    from transformers import AutoModelForCausalLM

    config = request.config
    extra = (
        {} if request.attn_implementation is None else {"attn_implementation": request.attn_implementation}
    )
    if request.weights is None:
        # build directly on the device: initialising billions of parameters there is fast, on CPU it is not
        with request.device:
            module = AutoModelForCausalLM.from_config(config, dtype=request.dtype, **extra)
        loader = "transformers AutoModelForCausalLM.from_config (random init)"
    else:
        module = AutoModelForCausalLM.from_pretrained(
            request.weights, config=config, dtype=request.dtype, **extra
        )
        torch.nn.Module.to(
            module, request.device
        )  # device_map would need accelerate, not an agent dependency
        loader = "transformers AutoModelForCausalLM.from_pretrained (local weights)"
    module.eval()
    plan = observed_plan(module, request.ssm_kind, "transformers", request.device)
    _check_fast(spec, plan, request.require_fast_kernels)
    implementation = {**plan.implementation, "loader": loader}
    if attention:
        implementation["attention"] = str(module.config._attn_implementation)
    parameters, weight_bytes = _sizes(module)
    return LoadedModel(
        spec, module, "transformers", implementation, parameters, weight_bytes, "logits_to_keep", notes
    )


def build_pure_ssm(spec: ModelSpec, request: LoadRequest) -> LoadedModel:
    """Native mamba_ssm where preferred and possible, else transformers (no attention layers), saying why."""
    reason = "prefer_native=False" if not request.prefer_native else native_unavailable_reason(request.device)
    if reason is not None:
        return _transformers_model(
            spec, request, attention=False, notes=[f"native mamba_ssm not used: {reason}"]
        )
    return build_native(spec, request)


def build_native(spec: ModelSpec, request: LoadRequest) -> LoadedModel:
    """mamba_ssm's MambaLMHeadModel from the entry's original MambaConfig."""
    from mamba_ssm.models.config_mamba import MambaConfig
    from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel

    kwargs = native_config(spec)
    if request.ssm_kind == "mamba2" and not causal_conv1d_usable():
        # the memory-efficient Mamba-2 path always calls causal_conv1d; without it take the unfused path
        kwargs["ssm_cfg"] = {**kwargs["ssm_cfg"], "use_mem_eff_path": False}
    module = MambaLMHeadModel(MambaConfig(**kwargs), device=request.device, dtype=request.dtype)
    loader = "mamba_ssm MambaLMHeadModel (random init)"
    if request.weights is not None:
        from mamba_ssm.utils.hf import load_state_dict_hf

        # strict: a checkpoint of another architecture than the entry's fails here instead of running
        module.load_state_dict(
            load_state_dict_hf(request.weights, device=request.device, dtype=request.dtype)
        )
        loader = "mamba_ssm MambaLMHeadModel + load_state_dict (local weights)"
    module.eval()
    plan = observed_plan(module, request.ssm_kind, "mamba_ssm", request.device)
    _check_fast(spec, plan, request.require_fast_kernels)
    parameters, weight_bytes = _sizes(module)
    implementation = {**plan.implementation, "loader": loader}
    return LoadedModel(spec, module, "mamba_ssm", implementation, parameters, weight_bytes, "num_last_tokens")
