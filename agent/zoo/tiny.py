"""Shrunk variants of zoo entries for CPU tests: same model_type, layer kinds and loader path, tiny widths."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

from ctxscope.agent.zoo.spec import ModelSpec, ZooError, get_spec

TINY_VOCAB = 512
_TOKEN_ID_KEYS = ("pad_token_id", "bos_token_id", "eos_token_id")

_ATTENTION = {"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128}


def _qwen2(c: dict[str, Any]) -> dict[str, Any]:
    return {**c, **_ATTENTION, "num_hidden_layers": 2, "max_window_layers": 2}


def _llama(c: dict[str, Any]) -> dict[str, Any]:
    tiny = {**c, **_ATTENTION, "num_hidden_layers": 2}
    if "head_dim" in c:
        tiny["head_dim"] = 16
    return tiny


def _phi3(c: dict[str, Any]) -> dict[str, Any]:
    tiny: dict[str, Any] = {**c, **_ATTENTION, "num_key_value_heads": 4, "num_hidden_layers": 2}
    rope = c.get("rope_scaling")
    if isinstance(rope, dict):
        half_head = 64 // 4 // 2  # LongRoPE holds one factor per rotary frequency
        tiny["rope_scaling"] = {
            **rope,
            "long_factor": rope["long_factor"][:half_head],
            "short_factor": rope["short_factor"][:half_head],
        }
    return tiny


def _gpt_neo(c: dict[str, Any]) -> dict[str, Any]:
    return {
        **c,
        "hidden_size": 64,
        "num_heads": 4,
        "num_layers": 2,
        "attention_types": [[["global", "local"], 1]],
        "attention_layers": ["global", "local"],
        "window_size": 4,
    }


def _mamba(c: dict[str, Any]) -> dict[str, Any]:
    # a vocabulary that is not a multiple of pad_vocab_size_multiple, so padding is exercised
    return {**c, "d_model": 64, "n_layer": 2, "vocab_size": TINY_VOCAB - 12}


def _mamba2(c: dict[str, Any]) -> dict[str, Any]:
    ssm_cfg = {**c.get("ssm_cfg", {}), "d_state": 16, "headdim": 16}
    return {**c, "d_model": 64, "n_layer": 2, "vocab_size": TINY_VOCAB - 12, "ssm_cfg": ssm_cfg}


_MAMBA2_MIXER = {"mamba_n_heads": 8, "mamba_d_head": 16, "mamba_d_state": 16}


def _falcon_h1(c: dict[str, Any]) -> dict[str, Any]:
    return {**c, **_ATTENTION, **_MAMBA2_MIXER, "num_hidden_layers": 2, "head_dim": 16, "mamba_d_ssm": 128}


def _zamba2(c: dict[str, Any]) -> dict[str, Any]:
    # two hybrid layers, so a model with num_mem_blocks=2 keeps both shared blocks
    return {
        **c,
        "hidden_size": 64,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "intermediate_size": 128,
        "num_hidden_layers": 4,
        "layers_block_type": ["mamba", "hybrid", "mamba", "hybrid"],
        "n_mamba_heads": 8,
        "mamba_headdim": 16,
        "mamba_d_state": 16,
        "adapter_rank": 8,
    }


def _bamba(c: dict[str, Any]) -> dict[str, Any]:
    tiny = {**c, **_ATTENTION, **_MAMBA2_MIXER, "num_hidden_layers": 3, "attn_layer_indices": [1]}
    if "attn_rotary_emb" in c:
        tiny["attn_rotary_emb"] = 8
    return tiny


def _nemotron_h(c: dict[str, Any]) -> dict[str, Any]:
    return {
        **c,
        **_ATTENTION,
        "head_dim": 16,
        "num_hidden_layers": 4,
        "hybrid_override_pattern": "M*M-",
        "mamba_num_heads": 8,
        "mamba_head_dim": 16,
        "n_groups": 2,
        "ssm_state_size": 16,
    }


def _granitemoehybrid(c: dict[str, Any]) -> dict[str, Any]:
    return {
        **c,
        **_ATTENTION,
        **_MAMBA2_MIXER,
        "num_hidden_layers": 3,
        "shared_intermediate_size": 128,
        "layer_types": ["mamba", "attention", "mamba"],
    }


def _jamba(c: dict[str, Any]) -> dict[str, Any]:
    return {
        **c,
        **_ATTENTION,
        "num_hidden_layers": 4,
        "attn_layer_period": 2,
        "attn_layer_offset": 1,
        "expert_layer_period": 2,
        "expert_layer_offset": 1,
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "mamba_dt_rank": 8,
        "mamba_d_state": 8,
    }


SHRINK: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "qwen2": _qwen2,
    "llama": _llama,
    "phi3": _phi3,
    "gpt_neo": _gpt_neo,
    "mamba": _mamba,
    "mamba2": _mamba2,
    "falcon_h1": _falcon_h1,
    "zamba2": _zamba2,
    "bamba": _bamba,
    "nemotron_h": _nemotron_h,
    "granitemoehybrid": _granitemoehybrid,
    "jamba": _jamba,
}


def _within_vocab(config: dict[str, Any]) -> dict[str, Any]:
    if "d_model" in config:
        return config
    config["vocab_size"] = TINY_VOCAB
    for key in _TOKEN_ID_KEYS:
        value = config.get(key)
        if isinstance(value, int) and value >= TINY_VOCAB:
            config[key] = TINY_VOCAB - 1
        elif isinstance(value, list):
            config[key] = [min(v, TINY_VOCAB - 1) for v in value]
    return config


def tiny_spec(name_or_spec: str | ModelSpec) -> ModelSpec:
    """The entry shrunk to a few layers and small widths, for CPU tests of the same loader path."""
    spec = get_spec(name_or_spec) if isinstance(name_or_spec, str) else name_or_spec
    if spec.unavailable:
        raise ZooError(f"{spec.name} is unavailable: {spec.unavailable}")
    shrink = SHRINK.get(spec.model_type)
    if shrink is None:
        raise ZooError(f"{spec.name}: no tiny variant for model_type {spec.model_type!r}")
    config = _within_vocab(shrink(copy.deepcopy(spec.config)))
    return dataclasses.replace(spec, name=f"{spec.name}-tiny", config=config, tiny=True)


def spec_for(name: str, *, tiny: bool) -> ModelSpec:
    """The entry as a plan or a command names it: the shrunk variant when `tiny`, else the real one."""
    return tiny_spec(name) if tiny else get_spec(name)
