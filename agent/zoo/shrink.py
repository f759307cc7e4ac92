"""One shrink per architecture: the shipped config with a few layers and small widths, same layer kinds
(architectures.py names which model_type takes which; tiny.py applies it)."""

from __future__ import annotations

from typing import Any

TINY_VOCAB = 512

_ATTENTION = {"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128}


def qwen2(c: dict[str, Any]) -> dict[str, Any]:
    return {**c, **_ATTENTION, "num_hidden_layers": 2, "max_window_layers": 2}


def llama(c: dict[str, Any]) -> dict[str, Any]:
    tiny = {**c, **_ATTENTION, "num_hidden_layers": 2}
    if "head_dim" in c:
        tiny["head_dim"] = 16
    return tiny


def phi3(c: dict[str, Any]) -> dict[str, Any]:
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


def gpt_neo(c: dict[str, Any]) -> dict[str, Any]:
    return {
        **c,
        "hidden_size": 64,
        "num_heads": 4,
        "num_layers": 2,
        "attention_types": [[["global", "local"], 1]],
        "attention_layers": ["global", "local"],
        "window_size": 4,
    }


def mamba(c: dict[str, Any]) -> dict[str, Any]:
    # a vocabulary that is not a multiple of pad_vocab_size_multiple, so padding is exercised
    return {**c, "d_model": 64, "n_layer": 2, "vocab_size": TINY_VOCAB - 12}


def mamba2(c: dict[str, Any]) -> dict[str, Any]:
    ssm_cfg = {**c.get("ssm_cfg", {}), "d_state": 16, "headdim": 16}
    return {**c, "d_model": 64, "n_layer": 2, "vocab_size": TINY_VOCAB - 12, "ssm_cfg": ssm_cfg}


_MAMBA2_MIXER = {"mamba_n_heads": 8, "mamba_d_head": 16, "mamba_d_state": 16}


def falcon_h1(c: dict[str, Any]) -> dict[str, Any]:
    return {**c, **_ATTENTION, **_MAMBA2_MIXER, "num_hidden_layers": 2, "head_dim": 16, "mamba_d_ssm": 128}


def zamba2(c: dict[str, Any]) -> dict[str, Any]:
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


def bamba(c: dict[str, Any]) -> dict[str, Any]:
    tiny = {**c, **_ATTENTION, **_MAMBA2_MIXER, "num_hidden_layers": 3, "attn_layer_indices": [1]}
    if "attn_rotary_emb" in c:
        tiny["attn_rotary_emb"] = 8
    return tiny


def nemotron_h(c: dict[str, Any]) -> dict[str, Any]:
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


def granitemoehybrid(c: dict[str, Any]) -> dict[str, Any]:
    return {
        **c,
        **_ATTENTION,
        **_MAMBA2_MIXER,
        "num_hidden_layers": 3,
        "shared_intermediate_size": 128,
        "layer_types": ["mamba", "attention", "mamba"],
    }


def jamba(c: dict[str, Any]) -> dict[str, Any]:
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
