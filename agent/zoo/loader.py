"""Build a zoo entry as a runnable torch module: an explicit registry from config `model_type` to a builder.

Random weights by default (latency, memory and energy do not depend on weight values); real weights only
from a local path. Every load states who runs the forward and which implementation each hot operation
takes, observed in a short probe forward of the built model (kernels.observed_plan).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ctxscope.agent.zoo.hfconfig import NATIVE_MODEL_TYPES, hf_config, native_config
from ctxscope.agent.zoo.kernels import (
    KernelPathError,
    KernelPlan,
    causal_conv1d_usable,
    import_error,
    observed_plan,
)
from ctxscope.agent.zoo.spec import ModelSpec, Runtime, ZooError, get_spec


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
    device: torch.device
    dtype: torch.dtype
    weights: str | None
    prefer_native: bool
    require_fast_kernels: bool
    attn_implementation: str | None


def native_unavailable_reason(device: torch.device) -> str | None:
    """None when mamba_ssm's MambaLMHeadModel can run on `device`, else why not."""
    if device.type != "cuda":
        return f"mamba_ssm needs a CUDA device (got {device.type})"
    return import_error("mamba_ssm.models.mixer_seq_simple")


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
    builder = LOADERS.get(spec.model_type)
    if builder is None:
        raise ZooError(
            f"{spec.name}: no loader for model_type {spec.model_type!r} (loaders: {', '.join(LOADERS)})"
        )
    request = LoadRequest(
        torch.device(device), dtype, weights, prefer_native, require_fast_kernels, attn_implementation
    )
    return builder(spec, request)


def _check_fast(spec: ModelSpec, plan: KernelPlan, required: bool) -> None:
    if required and plan.missing:
        raise KernelPathError(
            f"{spec.name}: fast kernels required but missing {', '.join(plan.missing)}; "
            f"would run {plan.implementation}"
        )


def _sizes(module: torch.nn.Module) -> tuple[int, int]:
    params = list(module.parameters())  # shared and tied parameters appear once
    return sum(p.numel() for p in params), sum(p.numel() * p.element_size() for p in params)


def build_transformers(spec: ModelSpec, request: LoadRequest, notes: list[str] | None = None) -> LoadedModel:
    """AutoModelForCausalLM from the entry's transformers config."""
    from transformers import AutoModelForCausalLM

    config = hf_config(spec)
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
    plan = observed_plan(module, spec.model_type, "transformers", request.device)
    _check_fast(spec, plan, request.require_fast_kernels)
    implementation = {**plan.implementation, "loader": loader}
    if spec.model_type not in NATIVE_MODEL_TYPES:
        implementation["attention"] = str(module.config._attn_implementation)
    parameters, weight_bytes = _sizes(module)
    return LoadedModel(
        spec, module, "transformers", implementation, parameters, weight_bytes, "logits_to_keep", notes or []
    )


def build_pure_ssm(spec: ModelSpec, request: LoadRequest) -> LoadedModel:
    """Native mamba_ssm where preferred and possible, else transformers, saying why."""
    if not request.prefer_native:
        return build_transformers(spec, request, ["native mamba_ssm not used: prefer_native=False"])
    reason = native_unavailable_reason(request.device)
    if reason is not None:
        return build_transformers(spec, request, [f"native mamba_ssm not used: {reason}"])
    return build_native(spec, request)


def build_native(spec: ModelSpec, request: LoadRequest) -> LoadedModel:
    """mamba_ssm's MambaLMHeadModel from the entry's original MambaConfig."""
    from mamba_ssm.models.config_mamba import MambaConfig
    from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel

    kwargs = native_config(spec)
    if spec.model_type == "mamba2" and not causal_conv1d_usable():
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
    plan = observed_plan(module, spec.model_type, "mamba_ssm", request.device)
    _check_fast(spec, plan, request.require_fast_kernels)
    parameters, weight_bytes = _sizes(module)
    implementation = {**plan.implementation, "loader": loader}
    return LoadedModel(spec, module, "mamba_ssm", implementation, parameters, weight_bytes, "num_last_tokens")


# model_type -> builder; a model_type missing here is not loadable (no guessing from names)
LOADERS: dict[str, Callable[[ModelSpec, LoadRequest], LoadedModel]] = {
    "qwen2": build_transformers,
    "llama": build_transformers,
    "phi3": build_transformers,
    "gpt_neo": build_transformers,
    "mamba": build_pure_ssm,
    "mamba2": build_pure_ssm,
    "falcon_h1": build_transformers,
    "zamba2": build_transformers,
    "bamba": build_transformers,
    "nemotron_h": build_transformers,
    "granitemoehybrid": build_transformers,
    "jamba": build_transformers,
}
