"""Parameter counts from a transformers config alone, one formula per architecture (architectures.py
names which model_type takes which).

Formulas follow the module layouts of transformers 5.x (and mamba_ssm 2.3, which has the same shapes for
the pure SSM entries); tests check them against the `numel()` of built tiny models.
"""

from __future__ import annotations

from typing import Any

from ctxscope.agent.zoo.spec import ZooError

ATTENTION_LAYER_TYPES = frozenset({"full_attention", "attention", "hybrid"})


def _linear(n_in: int, n_out: int, bias: bool = False) -> int:
    return n_in * n_out + (n_out if bias else 0)


def _attention(
    h_in: int, h_out: int, heads: int, kv_heads: int, head_dim: int, qkv_bias: bool, o_bias: bool
) -> int:
    q = _linear(h_in, heads * head_dim, qkv_bias)
    kv = 2 * _linear(h_in, kv_heads * head_dim, qkv_bias)
    return q + kv + _linear(heads * head_dim, h_out, o_bias)


def _mamba2_mixer(
    c: Any,
    *,
    hidden: int,
    inner: int,
    heads: int,
    groups: int,
    state: int,
    conv_kernel: int,
    conv_bias: bool,
    proj_bias: bool,
    out_bias: bool,
    gated_norm: bool = True,
) -> int:
    conv_dim = inner + 2 * groups * state
    in_proj = _linear(hidden, inner + conv_dim + heads, proj_bias)
    conv = conv_dim * conv_kernel + (conv_dim if conv_bias else 0)
    return in_proj + conv + 3 * heads + (inner if gated_norm else 0) + _linear(inner, hidden, out_bias)


def _mamba1_mixer(
    *, hidden: int, inner: int, state: int, dt_rank: int, conv_kernel: int, conv_bias: bool, proj_bias: bool
) -> int:
    conv = inner * conv_kernel + (inner if conv_bias else 0)
    x_proj = _linear(inner, dt_rank + 2 * state)
    dt_proj = _linear(dt_rank, inner, bias=True)
    return (
        _linear(hidden, 2 * inner, proj_bias)
        + conv
        + x_proj
        + dt_proj
        + inner * state
        + inner
        + _linear(inner, hidden, proj_bias)
    )


def _glu_mlp(hidden: int, inner: int, bias: bool = False) -> int:
    return 2 * _linear(hidden, inner, bias) + _linear(inner, hidden, bias)


def _ends(c: Any, norm: int) -> int:
    """Embedding, final norm and an untied LM head."""
    embed = c.vocab_size * c.hidden_size
    return embed + norm + (0 if c.tie_word_embeddings else embed)


def _head_dim(c: Any) -> int:
    return getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads


def _dense(c: Any, *, qkv_bias: bool, o_bias: bool, mlp_bias: bool) -> int:
    h = c.hidden_size
    layer = _attention(h, h, c.num_attention_heads, c.num_key_value_heads, _head_dim(c), qkv_bias, o_bias)
    layer += _glu_mlp(h, c.intermediate_size, mlp_bias) + 2 * h
    return c.num_hidden_layers * layer + _ends(c, h)


def qwen2(c: Any) -> int:
    return _dense(c, qkv_bias=True, o_bias=False, mlp_bias=False)


def llama(c: Any) -> int:
    return _dense(c, qkv_bias=c.attention_bias, o_bias=c.attention_bias, mlp_bias=c.mlp_bias)


def phi3(c: Any) -> int:
    return _dense(c, qkv_bias=False, o_bias=False, mlp_bias=False)


def gpt_neo(c: Any) -> int:
    h = c.hidden_size
    inner = c.intermediate_size or 4 * h
    layer = 2 * (2 * h) + 3 * h * h + _linear(h, h, True) + _linear(h, inner, True) + _linear(inner, h, True)
    return c.vocab_size * h + c.max_position_embeddings * h + c.num_layers * layer + 2 * h


def mamba(c: Any) -> int:
    h = c.hidden_size
    mixer = _mamba1_mixer(
        hidden=h,
        inner=c.intermediate_size,
        state=c.state_size,
        dt_rank=c.time_step_rank,
        conv_kernel=c.conv_kernel,
        conv_bias=c.use_conv_bias,
        proj_bias=c.use_bias,
    )
    return c.num_hidden_layers * (h + mixer) + _ends(c, h)


def mamba2(c: Any) -> int:
    h = c.hidden_size
    mixer = _mamba2_mixer(
        c,
        hidden=h,
        inner=c.num_heads * c.head_dim,
        heads=c.num_heads,
        groups=c.n_groups,
        state=c.state_size,
        conv_kernel=c.conv_kernel,
        conv_bias=c.use_conv_bias,
        proj_bias=c.use_bias,
        out_bias=c.use_bias,
    )
    return c.num_hidden_layers * (h + mixer) + _ends(c, h)


def falcon_h1(c: Any) -> int:
    h = c.hidden_size
    inner = c.mamba_d_ssm or int(c.mamba_expand * h)
    mixer = _mamba2_mixer(
        c,
        hidden=h,
        inner=inner,
        heads=c.mamba_n_heads,
        groups=c.mamba_n_groups,
        state=c.mamba_d_state,
        conv_kernel=c.mamba_d_conv,
        conv_bias=c.mamba_conv_bias,
        proj_bias=c.mamba_proj_bias,
        out_bias=c.projectors_bias,
        gated_norm=c.mamba_rms_norm,
    )
    attn = _attention(
        h, h, c.num_attention_heads, c.num_key_value_heads, _head_dim(c), c.attention_bias, c.attention_bias
    )
    layer = mixer + attn + _glu_mlp(h, c.intermediate_size, c.mlp_bias) + 2 * h
    return c.num_hidden_layers * layer + _ends(c, h)


def zamba2(c: Any) -> int:
    h, rank, bias = c.hidden_size, c.adapter_rank, c.add_bias_linear
    inner = int(c.mamba_expand * h)
    mamba_layer = h + _mamba2_mixer(
        c,
        hidden=h,
        inner=inner,
        heads=c.n_mamba_heads,
        groups=c.mamba_ngroups,
        state=c.mamba_d_state,
        conv_kernel=c.mamba_d_conv,
        conv_bias=c.use_conv_bias,
        proj_bias=bias,
        out_bias=bias,
    )
    n_hybrid = len(c.hybrid_layer_ids)
    total = c.num_hidden_layers * mamba_layer + n_hybrid * h * h  # every hybrid layer has its own linear
    attn_in = c.attention_hidden_size
    for block in range(min(c.num_mem_blocks, n_hybrid)):
        users = sum(1 for i in range(n_hybrid) if i % c.num_mem_blocks == block)
        shared = attn_in + h  # input_layernorm on the concatenated input, pre_ff_layernorm
        shared += _attention(
            attn_in, h, c.num_attention_heads, c.num_key_value_heads, c.attention_head_dim, False, False
        )
        if c.use_shared_attention_adapter:
            shared += users * 3 * (attn_in * rank + rank * attn_in)
        shared += _linear(h, 2 * c.intermediate_size, bias) + _linear(c.intermediate_size, h, bias)
        shared += users * (h * rank + rank * 2 * c.intermediate_size)
        total += shared
    return total + _ends(c, h)


def _bamba_like_mixer(c: Any) -> int:
    h = c.hidden_size
    return _mamba2_mixer(
        c,
        hidden=h,
        inner=int(c.mamba_expand * h),
        heads=c.mamba_n_heads,
        groups=c.mamba_n_groups,
        state=c.mamba_d_state,
        conv_kernel=c.mamba_d_conv,
        conv_bias=c.mamba_conv_bias,
        proj_bias=c.mamba_proj_bias,
        out_bias=c.mamba_proj_bias,
    )


def bamba(c: Any) -> int:
    h = c.hidden_size
    attn = _attention(
        h, h, c.num_attention_heads, c.num_key_value_heads, _head_dim(c), c.attention_bias, c.attention_bias
    )
    total = 0
    for kind in c.layers_block_type:
        mixer = attn if kind in ATTENTION_LAYER_TYPES else _bamba_like_mixer(c)
        total += mixer + _glu_mlp(h, c.intermediate_size, c.mlp_bias) + 2 * h
    return total + _ends(c, h)


def granitemoehybrid(c: Any) -> int:
    h = c.hidden_size
    attn = _attention(
        h,
        h,
        c.num_attention_heads,
        c.num_key_value_heads,
        h // c.num_attention_heads,
        c.attention_bias,
        c.attention_bias,
    )
    ffn = _linear(h, 2 * c.shared_intermediate_size) + _linear(c.shared_intermediate_size, h)
    if c.num_local_experts > 0:
        ffn += c.num_local_experts * (h + 3 * h * c.intermediate_size)
    total = 0
    for kind in c.layers_block_type:
        total += (attn if kind in ATTENTION_LAYER_TYPES else _bamba_like_mixer(c)) + ffn + 2 * h
    return total + _ends(c, h)


def nemotron_h(c: Any) -> int:
    h = c.hidden_size
    inner = c.mamba_num_heads * c.mamba_head_dim
    mixers = {
        "linear_attention": _mamba2_mixer(
            c,
            hidden=h,
            inner=inner,
            heads=c.mamba_num_heads,
            groups=c.n_groups,
            state=c.ssm_state_size,
            conv_kernel=c.conv_kernel,
            conv_bias=c.use_conv_bias,
            proj_bias=c.use_bias,
            out_bias=c.use_bias,
        ),
        "full_attention": _attention(
            h, h, c.num_attention_heads, c.num_key_value_heads, c.head_dim, False, False
        ),
        "mlp": _linear(h, c.intermediate_size, c.mlp_bias) + _linear(c.intermediate_size, h, c.mlp_bias),
    }
    unknown = set(c.layers_block_type) - set(mixers)
    if unknown:
        raise ZooError(f"no parameter formula for nemotron_h layer kinds {sorted(unknown)}")
    return sum(h + mixers[kind] for kind in c.layers_block_type) + _ends(c, h)


def jamba(c: Any) -> int:
    h = c.hidden_size
    inner = c.mamba_expand * h
    mamba = _mamba1_mixer(
        hidden=h,
        inner=inner,
        state=c.mamba_d_state,
        dt_rank=c.mamba_dt_rank,
        conv_kernel=c.mamba_d_conv,
        conv_bias=c.mamba_conv_bias,
        proj_bias=c.mamba_proj_bias,
    )
    mamba += c.mamba_dt_rank + 2 * c.mamba_d_state  # dt, B and C layernorms
    attn = _attention(
        h, h, c.num_attention_heads, c.num_key_value_heads, h // c.num_attention_heads, False, False
    )
    total = 0
    for kind, experts in zip(c.layers_block_type, c.layers_num_experts, strict=True):
        mlp = _glu_mlp(h, c.intermediate_size)
        ffn = experts * mlp + experts * h if experts > 1 else mlp
        total += (attn if kind in ATTENTION_LAYER_TYPES else mamba) + ffn + 2 * h
    return total + _ends(c, h)
