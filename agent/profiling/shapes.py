"""The compute-relevant shape of a model, read from its config: which blocks, how wide, how many.

One reader per config type (HF `model_type`, or mamba_ssm's own MambaConfig), chosen from a registry,
never from the model's name. The roofline counts FLOPs and bytes from these shapes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any


@dataclass(frozen=True)
class Attention:
    """Causal self-attention with its projections; `in_dim` may differ from the residual width."""

    in_dim: int
    out_dim: int
    q_heads: int
    kv_heads: int
    head_dim: int


@dataclass(frozen=True)
class Mlp:
    hidden: int
    intermediate: int
    gated: bool


@dataclass(frozen=True)
class Linear:
    in_dim: int
    out_dim: int


@dataclass(frozen=True)
class Mamba1:
    d_model: int
    d_inner: int
    d_state: int
    dt_rank: int
    d_conv: int


@dataclass(frozen=True)
class Mamba2:
    d_model: int
    d_inner: int
    n_heads: int
    head_dim: int
    d_state: int
    n_groups: int
    d_conv: int
    chunk: int


Block = Attention | Mlp | Linear | Mamba1 | Mamba2


@dataclass(frozen=True)
class ArchShape:
    """Blocks in the order a forward pass runs them (a shared block appears once per use)."""

    config_type: str
    hidden: int
    vocab: int
    blocks: tuple[Block, ...]
    norms: int


MAMBA_SSM = "mamba_ssm"


def arch_shape(config: Any) -> ArchShape:
    """The shape of a model from its config: an HF PretrainedConfig, a mamba_ssm MambaConfig, or a
    config.json mapping (one without `model_type` is mamba_ssm's, the one format that lacks it)."""
    if isinstance(config, Mapping):
        if "model_type" in config:
            from transformers import AutoConfig

            config = AutoConfig.for_model(**config)
        else:
            config = SimpleNamespace(**config)
    if type(config).__module__.startswith("mamba_ssm") or isinstance(config, SimpleNamespace):
        config_type = MAMBA_SSM
    else:
        config_type = getattr(config, "model_type", "")
    reader = READERS.get(config_type)
    if reader is None:
        raise KeyError(f"no shape reader for config type {config_type!r}; known: {sorted(READERS)}")
    return reader(config)


def _transformer(c: Any) -> ArchShape:
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    kv_heads = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
    attention = Attention(c.hidden_size, c.hidden_size, c.num_attention_heads, kv_heads, head_dim)
    mlp = Mlp(c.hidden_size, c.intermediate_size, gated=True)
    blocks = tuple(b for _ in range(c.num_hidden_layers) for b in (attention, mlp))
    return ArchShape(c.model_type, c.hidden_size, c.vocab_size, blocks, norms=2 * c.num_hidden_layers + 1)


def _hf_mamba(c: Any) -> ArchShape:
    d_inner = c.intermediate_size
    block = Mamba1(c.hidden_size, d_inner, c.state_size, c.time_step_rank, c.conv_kernel)
    return ArchShape(
        "mamba", c.hidden_size, c.vocab_size, (block,) * c.num_hidden_layers, c.num_hidden_layers + 1
    )


def _hf_mamba2(c: Any) -> ArchShape:
    d_inner = int(c.expand * c.hidden_size)
    block = Mamba2(
        c.hidden_size, d_inner, c.num_heads, c.head_dim, c.state_size, c.n_groups, c.conv_kernel, c.chunk_size
    )
    return ArchShape(
        "mamba2", c.hidden_size, c.vocab_size, (block,) * c.num_hidden_layers, c.num_hidden_layers + 1
    )


def _mamba_ssm(c: Any) -> ArchShape:
    """mamba_ssm's MambaLMHeadModel config: Mamba or Mamba-2 layers, optional MLP and attention layers."""
    ssm_cfg = dict(getattr(c, "ssm_cfg", None) or {})
    layer = ssm_cfg.get("layer", "Mamba1")
    expand = ssm_cfg.get("expand", 2)
    d_conv = ssm_cfg.get("d_conv", 4)
    d_inner = expand * c.d_model
    ssm: Block
    if layer == "Mamba2":
        head_dim = ssm_cfg.get("headdim", 64)
        ssm = Mamba2(
            c.d_model,
            d_inner,
            d_inner // head_dim,
            head_dim,
            ssm_cfg.get("d_state", 128),
            ssm_cfg.get("ngroups", 1),
            d_conv,
            ssm_cfg.get("chunk_size", 256),
        )
    else:
        dt_rank = ssm_cfg.get("dt_rank", "auto")
        ssm = Mamba1(
            c.d_model,
            d_inner,
            ssm_cfg.get("d_state", 16),
            math.ceil(c.d_model / 16) if dt_rank == "auto" else int(dt_rank),
            d_conv,
        )
    attn_cfg = dict(getattr(c, "attn_cfg", None) or {})
    attention_layers = set(getattr(c, "attn_layer_idx", None) or [])
    d_intermediate = getattr(c, "d_intermediate", 0)
    blocks: list[Block] = []
    for i in range(c.n_layer):
        if i in attention_layers:
            heads = int(attn_cfg["num_heads"])
            kv = int(attn_cfg.get("num_heads_kv", heads))
            attn_head_dim = int(attn_cfg.get("head_dim", c.d_model // heads))
            blocks.append(Attention(c.d_model, c.d_model, heads, kv, attn_head_dim))
        else:
            blocks.append(ssm)
        if d_intermediate:
            blocks.append(Mlp(c.d_model, d_intermediate, gated=True))
    multiple = getattr(c, "pad_vocab_size_multiple", 8)
    vocab = multiple * math.ceil(c.vocab_size / multiple)
    norms = c.n_layer * (2 if d_intermediate else 1) + 1
    return ArchShape(MAMBA_SSM, c.d_model, vocab, tuple(blocks), norms)


def _zamba2(c: Any) -> ArchShape:
    """Zamba2: Mamba-2 layers; hybrid layers first run the shared transformer block on the residual
    concatenated with the original embeddings (2x width), then a linear, then their Mamba-2 layer."""
    d_inner = int(c.mamba_expand * c.hidden_size)
    mamba = Mamba2(
        c.hidden_size,
        d_inner,
        c.n_mamba_heads,
        d_inner // c.n_mamba_heads,
        c.mamba_d_state,
        c.mamba_ngroups,
        c.mamba_d_conv,
        c.chunk_size,
    )
    attention = Attention(
        c.attention_hidden_size,
        c.hidden_size,
        c.num_attention_heads,
        c.num_key_value_heads,
        c.attention_head_dim,
    )
    shared: list[Block] = [attention, Mlp(c.hidden_size, c.intermediate_size, gated=True)]
    rank, wide = c.adapter_rank, c.attention_hidden_size
    if c.use_shared_attention_adapter:  # per-layer LoRA adapters on q, k and v
        shared += [Linear(wide, rank), Linear(rank, wide)] * 3
    if getattr(c, "use_shared_mlp_adapter", False):
        shared += [Linear(c.hidden_size, rank), Linear(rank, 2 * c.intermediate_size)]
    shared.append(Linear(c.hidden_size, c.hidden_size))
    blocks: list[Block] = []
    for kind in c.layers_block_type:
        if kind == "hybrid":
            blocks.extend(shared)
        blocks.append(mamba)
    hybrids = sum(kind == "hybrid" for kind in c.layers_block_type)
    return ArchShape(
        "zamba2", c.hidden_size, c.vocab_size, tuple(blocks), c.num_hidden_layers + 2 * hybrids + 1
    )


def _falcon_h1(c: Any) -> ArchShape:
    """Falcon-H1: every layer runs attention and a Mamba-2 mixer in parallel, then an MLP."""
    d_inner = c.mamba_d_ssm if c.mamba_d_ssm is not None else int(c.mamba_expand * c.hidden_size)
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    attention = Attention(
        c.hidden_size, c.hidden_size, c.num_attention_heads, c.num_key_value_heads, head_dim
    )
    mamba = Mamba2(
        c.hidden_size,
        d_inner,
        c.mamba_n_heads,
        c.mamba_d_head if isinstance(c.mamba_d_head, int) else d_inner // c.mamba_n_heads,
        c.mamba_d_state,
        c.mamba_n_groups,
        c.mamba_d_conv,
        c.mamba_chunk_size,
    )
    mlp = Mlp(c.hidden_size, c.intermediate_size, gated=True)
    blocks = tuple(b for _ in range(c.num_hidden_layers) for b in (attention, mamba, mlp))
    return ArchShape("falcon_h1", c.hidden_size, c.vocab_size, blocks, norms=2 * c.num_hidden_layers + 1)


READERS: dict[str, Callable[[Any], ArchShape]] = {
    "qwen2": _transformer,
    "qwen3": _transformer,
    "llama": _transformer,
    "mistral": _transformer,
    "phi3": _transformer,
    "mamba": _hf_mamba,
    "mamba2": _hf_mamba2,
    "zamba2": _zamba2,
    "falcon_h1": _falcon_h1,
    MAMBA_SSM: _mamba_ssm,
}
