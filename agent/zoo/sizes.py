"""Sizes from the architecture alone: parameter counts, KV cache bytes per token, fixed SSM state bytes.

The parameter count is its architecture's formula (parameters.py); cache and state sizes are read off the
architecture's shape (shapes.py), the same blocks the roofline counts. Tests check them against the
`numel()` and cache tensors of built tiny models.
"""

from __future__ import annotations

import torch

from ctxscope.agent.zoo.architectures import arch_shape, architecture, hf_config
from ctxscope.agent.zoo.shapes import Attention, Mamba1, Mamba2
from ctxscope.agent.zoo.spec import ModelSpec, Runtime

INT32_MAX = 2**31 - 1


def parameter_count(spec: ModelSpec) -> int:
    """Parameters of the built model (shared and tied weights once), from the config alone."""
    return architecture(spec.model_type).parameters(hf_config(spec))


def cache_bytes_per_token(spec: ModelSpec, dtype: torch.dtype) -> int:
    """KV cache bytes each extra token of context adds, per sequence (0 for pure SSMs).

    A shared attention block (Zamba2) keeps a cache per use, as it appears once per use in the shape."""
    per_token = sum(
        2 * block.kv_heads * block.head_dim
        for block in arch_shape(spec).blocks
        if isinstance(block, Attention)
    )
    return per_token * _itemsize(dtype)


def state_bytes(spec: ModelSpec, dtype: torch.dtype, runtime: Runtime = "transformers") -> int:
    """Fixed-size SSM state (conv + SSM states of every SSM layer) per sequence, in bytes (0 without SSM).

    Conv states are kept in the model dtype. SSM states differ by runtime: transformers 5.x keeps them in
    float32 whatever the model dtype (measured on its caches), mamba_ssm's `allocate_inference_cache`
    in the model dtype.
    """
    ssm_dtype = torch.float32 if runtime == "transformers" else dtype
    total = 0
    for block in arch_shape(spec).blocks:
        if isinstance(block, Mamba1):
            conv, ssm = block.d_inner * block.d_conv, block.d_inner * block.d_state
        elif isinstance(block, Mamba2):
            conv = (block.d_inner + 2 * block.n_groups * block.d_state) * block.d_conv
            ssm = block.d_inner * block.d_state
        else:
            continue
        total += conv * _itemsize(dtype) + ssm * _itemsize(ssm_dtype)
    return total


def ssd_in_proj_width(spec: ModelSpec) -> int | None:
    """Output features of a Mamba-2 mixer's in_proj (z, x, B, C, dt side by side); None without one."""
    widths = {
        2 * b.d_inner + 2 * b.n_groups * b.d_state + b.n_heads
        for b in arch_shape(spec).blocks
        if isinstance(b, Mamba2)
    }
    return max(widths, default=None)


def ssd_int32_limit_tokens(spec: ModelSpec) -> int | None:
    """Longest prompt (batch 1) whose in_proj output stays under 2**31 elements.

    mamba_ssm's Triton SSD kernels read x, B, C and dt as views into the in_proj output, whose sequence
    stride is the in_proj width, and compute element offsets in 32 bits: past this length a prefill
    on those kernels reads out of bounds (CUDA illegal memory access). On the H200 the faults of the
    max-context searches fell exactly past it (results/engine/README.md). None for models without SSD.
    """
    width = ssd_in_proj_width(spec)
    return None if width is None else INT32_MAX // width


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()
