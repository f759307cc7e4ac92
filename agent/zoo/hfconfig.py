"""From a zoo entry's public config to the configs the runtimes take: the two config readers.

Transformer and hybrid entries ship a transformers config.json and go to `AutoConfig.for_model`
(`published_config`). Pure Mamba and Mamba-2 entries ship the original mamba_ssm config (the one
`MambaLMHeadModel` reads); the equivalent transformers `MambaConfig` / `Mamba2Config` is derived here with
the same shapes (`derived_config`), so both runtimes build the same architecture. Each architecture names
its reader in architectures.py.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ctxscope.agent.zoo.spec import ModelSpec, ZooError

if TYPE_CHECKING:
    from transformers import PretrainedConfig

# mamba_ssm 2.3 defaults of the mixer constructors (modules/mamba_simple.py Mamba, modules/mamba2.py Mamba2)
# and of MambaConfig (models/config_mamba.py); the original configs leave these out.
MAMBA1_DEFAULTS: dict[str, Any] = {
    "d_state": 16,
    "d_conv": 4,
    "expand": 2,
    "dt_rank": "auto",
    "conv_bias": True,
    "bias": False,
}
MAMBA2_DEFAULTS: dict[str, Any] = {
    "d_state": 128,
    "d_conv": 4,
    "expand": 2,
    "headdim": 64,
    "ngroups": 1,
    "chunk_size": 256,
    "conv_bias": True,
    "bias": False,
    "rmsnorm": True,
    "norm_before_gate": False,
    "d_ssm": None,
}
NATIVE_DEFAULTS: dict[str, Any] = {
    "d_intermediate": 0,
    "ssm_cfg": {},
    "attn_layer_idx": [],
    "attn_cfg": {},
    "rms_norm": True,
    "residual_in_fp32": True,
    "fused_add_norm": True,
    "pad_vocab_size_multiple": 8,
    "tie_embeddings": True,
}


def native_config(spec: ModelSpec) -> dict[str, Any]:
    """Keyword arguments for mamba_ssm's `MambaConfig`, defaults filled in."""
    if "model_type" in spec.config:  # mamba_ssm's config is the one format without it
        raise ZooError(f"{spec.name}: ships a transformers config, no native mamba_ssm config")
    merged = {**NATIVE_DEFAULTS, **spec.config}
    return {key: merged[key] for key in ("d_model", "n_layer", "vocab_size", *NATIVE_DEFAULTS)}


def ssm_layer_config(spec: ModelSpec) -> dict[str, Any]:
    """The mixer arguments every layer of a pure Mamba / Mamba-2 entry gets, defaults filled in."""
    native = native_config(spec)
    if native["attn_layer_idx"] or native["d_intermediate"]:
        raise ZooError(f"{spec.name}: attention or MLP layers in a pure SSM entry are not supported")
    ssm_cfg = dict(native["ssm_cfg"])
    layer = ssm_cfg.pop("layer", "Mamba1")
    merged = {**(MAMBA2_DEFAULTS if layer == "Mamba2" else MAMBA1_DEFAULTS), **ssm_cfg, "layer": layer}
    if layer == "Mamba2" and merged["d_ssm"] is not None:
        raise ZooError(f"{spec.name}: Mamba-2 d_ssm (partial SSM width) has no transformers equivalent")
    return merged


def padded_vocab(spec: ModelSpec) -> int:
    native = native_config(spec)
    multiple = native["pad_vocab_size_multiple"]
    return math.ceil(native["vocab_size"] / multiple) * multiple


def _derived_hf_kwargs(spec: ModelSpec) -> dict[str, Any]:
    native = native_config(spec)
    layer = ssm_layer_config(spec)
    d_model = native["d_model"]
    common = {
        "vocab_size": padded_vocab(spec),
        "hidden_size": d_model,
        "num_hidden_layers": native["n_layer"],
        "state_size": layer["d_state"],
        "conv_kernel": layer["d_conv"],
        "expand": layer["expand"],
        "use_bias": layer["bias"],
        "use_conv_bias": layer["conv_bias"],
        "residual_in_fp32": native["residual_in_fp32"],
        "tie_word_embeddings": native["tie_embeddings"],
        "layer_norm_epsilon": 1e-5,
        "pad_token_id": 0,
        "bos_token_id": 0,
        "eos_token_id": 0,
    }
    if layer["layer"] == "Mamba1":
        dt_rank = layer["dt_rank"]
        return {**common, "time_step_rank": math.ceil(d_model / 16) if dt_rank == "auto" else dt_rank}
    d_inner = layer["expand"] * d_model
    return {
        **common,
        "num_heads": d_inner // layer["headdim"],
        "head_dim": layer["headdim"],
        "n_groups": layer["ngroups"],
        "chunk_size": layer["chunk_size"],
        "rms_norm": layer["rmsnorm"],
    }


def derived_config(spec: ModelSpec) -> PretrainedConfig:
    """The transformers config equivalent to a pure SSM entry's mamba_ssm config."""
    from transformers import AutoConfig

    return AutoConfig.for_model(spec.model_type, **_derived_hf_kwargs(spec))


def published_config(spec: ModelSpec) -> PretrainedConfig:
    """The transformers config an entry ships, as published."""
    from transformers import AutoConfig

    kwargs = {k: v for k, v in spec.config.items() if k not in ("model_type", "auto_map", "_name_or_path")}
    rope = kwargs.get("rope_scaling")
    if isinstance(rope, dict) and rope.get("type") == "su":
        # The first Phi-3 revision named LongRoPE "su"; transformers 4.x renamed it on load, 5.x rejects it.
        kwargs["rope_scaling"] = {**rope, "type": "longrope"}
    return AutoConfig.for_model(spec.model_type, **kwargs)
