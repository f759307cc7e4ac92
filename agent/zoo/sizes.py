"""Sizes from the architecture alone: parameter counts, KV cache bytes per token, fixed SSM state bytes.

Formulas follow the module layouts of transformers 5.x (and mamba_ssm 2.3, which has the same shapes for
the pure SSM entries); tests check them against the `numel()` and cache tensors of built tiny models.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ctxscope.agent.zoo.hfconfig import hf_config
from ctxscope.agent.zoo.spec import ModelSpec, Runtime, ZooError

ATTENTION_LAYER_TYPES = frozenset({"full_attention", "attention", "hybrid"})
SSM_LAYER_TYPES = frozenset({"linear_attention", "mamba", "hybrid"})


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


def _qwen2(c: Any) -> int:
    return _dense(c, qkv_bias=True, o_bias=False, mlp_bias=False)


def _llama(c: Any) -> int:
    return _dense(c, qkv_bias=c.attention_bias, o_bias=c.attention_bias, mlp_bias=c.mlp_bias)


def _phi3(c: Any) -> int:
    return _dense(c, qkv_bias=False, o_bias=False, mlp_bias=False)


def _gpt_neo(c: Any) -> int:
    h = c.hidden_size
    inner = c.intermediate_size or 4 * h
    layer = 2 * (2 * h) + 3 * h * h + _linear(h, h, True) + _linear(h, inner, True) + _linear(inner, h, True)
    return c.vocab_size * h + c.max_position_embeddings * h + c.num_layers * layer + 2 * h


def _mamba(c: Any) -> int:
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


def _mamba2(c: Any) -> int:
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


def _falcon_h1(c: Any) -> int:
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


def _zamba2(c: Any) -> int:
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


def _bamba(c: Any) -> int:
    h = c.hidden_size
    attn = _attention(
        h, h, c.num_attention_heads, c.num_key_value_heads, _head_dim(c), c.attention_bias, c.attention_bias
    )
    total = 0
    for kind in c.layers_block_type:
        mixer = attn if kind in ATTENTION_LAYER_TYPES else _bamba_like_mixer(c)
        total += mixer + _glu_mlp(h, c.intermediate_size, c.mlp_bias) + 2 * h
    return total + _ends(c, h)


def _granitemoehybrid(c: Any) -> int:
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


def _nemotron_h(c: Any) -> int:
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


def _jamba(c: Any) -> int:
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


PARAMETER_FORMULAS: dict[str, Callable[[Any], int]] = {
    "qwen2": _qwen2,
    "llama": _llama,
    "phi3": _phi3,
    "gpt_neo": _gpt_neo,
    "mamba": _mamba,
    "mamba2": _mamba2,
    "falcon_h1": _falcon_h1,
    "zamba2": _zamba2,
    "bamba": _bamba,
    "granitemoehybrid": _granitemoehybrid,
    "nemotron_h": _nemotron_h,
    "jamba": _jamba,
}


def parameter_count(spec: ModelSpec) -> int:
    """Parameters of the built model (shared and tied weights once), from the config alone."""
    formula = PARAMETER_FORMULAS.get(spec.model_type)
    if formula is None:
        raise ZooError(f"{spec.name}: no parameter formula for model_type {spec.model_type!r}")
    return formula(hf_config(spec))


def _layer_types(c: Any, model_type: str) -> list[str]:
    if model_type in ("mamba", "mamba2"):
        return ["linear_attention"] * c.num_hidden_layers
    if model_type == "falcon_h1":
        return ["hybrid"] * c.num_hidden_layers
    if model_type in ("qwen2", "llama", "phi3"):
        return ["full_attention"] * c.num_hidden_layers
    if model_type == "gpt_neo":
        return ["full_attention"] * c.num_layers
    return list(c.layers_block_type)


def _kv_geometry(c: Any, model_type: str) -> tuple[int, int]:
    """(key/value heads, head dim) of the attention layers."""
    if model_type == "gpt_neo":
        return c.num_heads, c.hidden_size // c.num_heads
    if model_type == "zamba2":
        return c.num_key_value_heads, c.attention_head_dim
    return c.num_key_value_heads, _head_dim(c)


def cache_bytes_per_token(spec: ModelSpec, dtype: torch.dtype) -> int:
    """KV cache bytes each extra token of context adds, per sequence (0 for pure SSMs)."""
    c = hf_config(spec)
    n_attention = sum(1 for kind in _layer_types(c, spec.model_type) if kind in ATTENTION_LAYER_TYPES)
    if n_attention == 0:
        return 0
    kv_heads, head_dim = _kv_geometry(c, spec.model_type)
    return 2 * n_attention * kv_heads * head_dim * _itemsize(dtype)


SSD_MODEL_TYPES = frozenset({"mamba2", "nemotron_h", "zamba2", "falcon_h1", "bamba", "granitemoehybrid"})
INT32_MAX = 2**31 - 1


def _ssd_dims(c: Any, model_type: str) -> tuple[int, int, int, int, int]:
    """(heads, head dim, groups, state size, conv kernel) of one Mamba-2 (SSD) mixer."""
    if model_type == "mamba2":
        return c.num_heads, c.head_dim, c.n_groups, c.state_size, c.conv_kernel
    if model_type == "nemotron_h":
        return c.mamba_num_heads, c.mamba_head_dim, c.n_groups, c.ssm_state_size, c.conv_kernel
    if model_type == "zamba2":
        heads = c.n_mamba_heads
        head_dim = int(c.mamba_expand * c.hidden_size) // heads
        return heads, head_dim, c.mamba_ngroups, c.mamba_d_state, c.mamba_d_conv
    heads = c.mamba_n_heads
    inner = getattr(c, "mamba_d_ssm", None) or int(c.mamba_expand * c.hidden_size)
    return heads, inner // heads, c.mamba_n_groups, c.mamba_d_state, c.mamba_d_conv


def _ssm_geometry(c: Any, model_type: str) -> tuple[int, int]:
    """(conv state elements, SSM state elements) of one SSM layer, per sequence."""
    if model_type == "mamba":
        return c.intermediate_size * c.conv_kernel, c.intermediate_size * c.state_size
    if model_type == "jamba":
        inner = c.mamba_expand * c.hidden_size
        return inner * c.mamba_d_conv, inner * c.mamba_d_state
    heads, head_dim, groups, state, kernel = _ssd_dims(c, model_type)
    inner = heads * head_dim
    return (inner + 2 * groups * state) * kernel, inner * state


def ssd_in_proj_width(spec: ModelSpec) -> int | None:
    """Output features of a Mamba-2 mixer's in_proj (z, x, B, C, dt side by side); None without one."""
    if spec.model_type not in SSD_MODEL_TYPES:
        return None
    heads, head_dim, groups, state, _ = _ssd_dims(hf_config(spec), spec.model_type)
    inner = heads * head_dim
    return 2 * inner + 2 * groups * state + heads


def ssd_int32_limit_tokens(spec: ModelSpec) -> int | None:
    """Longest prompt (batch 1) whose in_proj output stays under 2**31 elements.

    mamba_ssm's Triton SSD kernels read x, B, C and dt as views into the in_proj output, whose sequence
    stride is the in_proj width, and compute element offsets in 32 bits: past this length a prefill
    on those kernels reads out of bounds (CUDA illegal memory access). On the H200 the faults of the
    max-context searches fell exactly past it (results/engine/README.md). None for models without SSD.
    """
    width = ssd_in_proj_width(spec)
    return None if width is None else INT32_MAX // width


def state_bytes(spec: ModelSpec, dtype: torch.dtype, runtime: Runtime = "transformers") -> int:
    """Fixed-size SSM state (conv + SSM states of every SSM layer) per sequence, in bytes (0 without SSM).

    Conv states are kept in the model dtype. SSM states differ by runtime: transformers 5.x keeps them in
    float32 whatever the model dtype (measured on its caches), mamba_ssm's `allocate_inference_cache`
    in the model dtype.
    """
    c = hf_config(spec)
    n_ssm = sum(1 for kind in _layer_types(c, spec.model_type) if kind in SSM_LAYER_TYPES)
    if n_ssm == 0:
        return 0
    conv, ssm = _ssm_geometry(c, spec.model_type)
    ssm_dtype = torch.float32 if runtime == "transformers" else dtype
    return n_ssm * (conv * _itemsize(dtype) + ssm * _itemsize(ssm_dtype))


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()
