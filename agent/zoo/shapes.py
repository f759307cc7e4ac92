"""The compute-relevant shape of a model, read from its transformers config: which blocks, how wide, how
many. One reader per architecture (architectures.py names which model_type takes which); the roofline
counts FLOPs and bytes from these shapes, and sizes.py the KV cache and SSM state they hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ctxscope.agent.zoo.spec import ZooError

ATTENTION_KINDS = frozenset({"full_attention", "attention"})  # layer kinds of transformers' hybrid configs
SSM_KINDS = frozenset({"linear_attention", "mamba"})


@dataclass(frozen=True)
class Attention:
    """Causal self-attention with its projections; `in_dim` may differ from the residual width."""

    in_dim: int
    out_dim: int
    q_heads: int
    kv_heads: int
    head_dim: int
    rotary: bool = True  # rotary position embedding applied to q and k


@dataclass(frozen=True)
class Mlp:
    hidden: int
    intermediate: int
    gated: bool


@dataclass(frozen=True)
class Moe:
    """A router and `experts` MLPs, each token through `top_k` of them."""

    hidden: int
    intermediate: int
    experts: int
    top_k: int
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


Block = Attention | Mlp | Moe | Linear | Mamba1 | Mamba2


@dataclass(frozen=True)
class ArchShape:
    """Blocks in the order a forward pass runs them (a shared block appears once per use)."""

    model_type: str
    hidden: int
    vocab: int
    blocks: tuple[Block, ...]
    norms: int


def _head_dim(c: Any) -> int:
    return getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads


def _layers(c: Any, per_layer: tuple[Block, ...], norms_per_layer: int) -> ArchShape:
    blocks = per_layer * c.num_hidden_layers
    return ArchShape(
        c.model_type, c.hidden_size, c.vocab_size, blocks, norms_per_layer * c.num_hidden_layers + 1
    )


def transformer(c: Any) -> ArchShape:
    """Llama-style decoder layers: rotary attention (grouped KV heads) and a gated MLP."""
    kv_heads = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
    attention = Attention(c.hidden_size, c.hidden_size, c.num_attention_heads, kv_heads, _head_dim(c))
    return _layers(c, (attention, Mlp(c.hidden_size, c.intermediate_size, gated=True)), 2)


def gpt_neo(c: Any) -> ArchShape:
    """GPT-Neo: learned positions (no rotary), full-width heads, a plain two-matrix MLP. Its local layers
    mask beyond the window but compute and cache the whole context, so they count as full attention."""
    h = c.hidden_size
    attention = Attention(h, h, c.num_heads, c.num_heads, h // c.num_heads, rotary=False)
    return _layers(c, (attention, Mlp(h, c.intermediate_size or 4 * h, gated=False)), 2)


def mamba(c: Any) -> ArchShape:
    block = Mamba1(c.hidden_size, c.intermediate_size, c.state_size, c.time_step_rank, c.conv_kernel)
    return _layers(c, (block,), 1)


def mamba2(c: Any) -> ArchShape:
    d_inner = int(c.expand * c.hidden_size)
    block = Mamba2(
        c.hidden_size, d_inner, c.num_heads, c.head_dim, c.state_size, c.n_groups, c.conv_kernel, c.chunk_size
    )
    return _layers(c, (block,), 1)


def zamba2(c: Any) -> ArchShape:
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


def falcon_h1(c: Any) -> ArchShape:
    """Falcon-H1: every layer runs attention and a Mamba-2 mixer in parallel, then an MLP."""
    d_inner = c.mamba_d_ssm if c.mamba_d_ssm is not None else int(c.mamba_expand * c.hidden_size)
    attention = Attention(
        c.hidden_size, c.hidden_size, c.num_attention_heads, c.num_key_value_heads, _head_dim(c)
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
    return _layers(c, (attention, mamba, Mlp(c.hidden_size, c.intermediate_size, gated=True)), 2)


def _bamba_like_mamba(c: Any) -> Mamba2:
    """The Mamba-2 mixer of Bamba and Granite-4.0-H (`mamba_*` fields, width mamba_expand x hidden)."""
    d_inner = int(c.mamba_expand * c.hidden_size)
    return Mamba2(
        c.hidden_size,
        d_inner,
        c.mamba_n_heads,
        d_inner // c.mamba_n_heads,
        c.mamba_d_state,
        c.mamba_n_groups,
        c.mamba_d_conv,
        c.mamba_chunk_size,
    )


def _mixer(kind: str, attention: Attention, ssm: Block) -> Block:
    if kind in ATTENTION_KINDS:
        return attention
    if kind in SSM_KINDS:
        return ssm
    raise ZooError(f"no shape for layer kind {kind!r}")


def bamba(c: Any) -> ArchShape:
    """Bamba: Mamba-2 layers with attention at `attn_layer_indices`, each layer followed by a gated MLP."""
    h = c.hidden_size
    attention = Attention(h, h, c.num_attention_heads, c.num_key_value_heads, _head_dim(c))
    mamba, mlp = _bamba_like_mamba(c), Mlp(h, c.intermediate_size, gated=True)
    blocks = tuple(b for kind in c.layers_block_type for b in (_mixer(kind, attention, mamba), mlp))
    return ArchShape("bamba", h, c.vocab_size, blocks, 2 * len(c.layers_block_type) + 1)


def granitemoehybrid(c: Any) -> ArchShape:
    """Granite-4.0-H: Mamba-2 or attention per `layer_types`, then a gated shared MLP and, with local
    experts, a routed MoE beside it. Attention takes no rotary embedding when positions are "nope"."""
    h = c.hidden_size
    heads = c.num_attention_heads
    rotary = c.position_embedding_type == "rope"
    attention = Attention(h, h, heads, c.num_key_value_heads, h // heads, rotary=rotary)
    ffn: tuple[Block, ...] = (Mlp(h, c.shared_intermediate_size, gated=True),)
    if c.num_local_experts > 0:
        ffn += (Moe(h, c.intermediate_size, c.num_local_experts, c.num_experts_per_tok, gated=True),)
    mamba = _bamba_like_mamba(c)
    blocks = tuple(b for kind in c.layers_block_type for b in (_mixer(kind, attention, mamba), *ffn))
    return ArchShape("granitemoehybrid", h, c.vocab_size, blocks, 2 * len(c.layers_block_type) + 1)


def nemotron_h(c: Any) -> ArchShape:
    """Nemotron-H: one mixer per layer as `hybrid_override_pattern` lays out (M: Mamba-2, *: attention,
    -: a plain two-matrix MLP); transformers reads the pattern into `layers_block_type`."""
    h = c.hidden_size
    mixers: dict[str, Block] = {
        "linear_attention": Mamba2(
            h,
            c.mamba_num_heads * c.mamba_head_dim,
            c.mamba_num_heads,
            c.mamba_head_dim,
            c.ssm_state_size,
            c.n_groups,
            c.conv_kernel,
            c.chunk_size,
        ),
        "full_attention": Attention(h, h, c.num_attention_heads, c.num_key_value_heads, c.head_dim),
        "mlp": Mlp(h, c.intermediate_size, gated=False),
    }
    unknown = set(c.layers_block_type) - set(mixers)
    if unknown:
        raise ZooError(f"no shape for nemotron_h layer kinds {sorted(unknown)}")
    blocks = tuple(mixers[kind] for kind in c.layers_block_type)
    return ArchShape("nemotron_h", h, c.vocab_size, blocks, len(blocks) + 1)


def jamba(c: Any) -> ArchShape:
    """Jamba: Mamba (selective scan) layers with attention every `attn_layer_period`, no positional
    embedding; every `expert_layer_period`-th layer has a routed MoE in place of its gated MLP."""
    h = c.hidden_size
    attention = Attention(
        h, h, c.num_attention_heads, c.num_key_value_heads, h // c.num_attention_heads, rotary=False
    )
    inner = c.mamba_expand * h
    mamba = Mamba1(h, inner, c.mamba_d_state, c.mamba_dt_rank, c.mamba_d_conv)
    blocks: list[Block] = []
    for kind, experts in zip(c.layers_block_type, c.layers_num_experts, strict=True):
        blocks.append(_mixer(kind, attention, mamba))
        if experts > 1:
            blocks.append(Moe(h, c.intermediate_size, experts, c.num_experts_per_tok, gated=True))
        else:
            blocks.append(Mlp(h, c.intermediate_size, gated=True))
    return ArchShape("jamba", h, c.vocab_size, tuple(blocks), 2 * len(c.layers_block_type) + 1)
