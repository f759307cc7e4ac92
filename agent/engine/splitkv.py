"""Decode attention of one query token, split over the key/value positions (flash-decoding), in Triton.

A decode step's attention reads the whole key/value cache for one query token per head. SDPA's kernels
tile over queries, so with one token a head's positions are read by few blocks; cuDNN read Falcon-H1's
two-head cache at about 1.4 TB/s on an H100. Here the positions are split into chunks, one program per
(batch, key/value head, chunk) so that the card is filled at any head count: each program loads its
chunk of keys and values once for all the query heads of the group (native GQA, no copy), keeps an
online softmax in float32, and writes its partial output with its running maximum and sum; a second
kernel combines the chunks. The float mask that the static-cache decode passes (0 where a position
counts, the dtype's minimum where it does not) is added to the scores, so unwritten positions weigh
nothing. Shapes and split sizes are fixed by the inputs' shapes: no host synchronisation, so the step
is captured in a CUDA graph and traced by torch.compile (a `torch.library.triton_op`).

`available()` says whether the kernels can run here (CUDA and Triton); the attention trial checks the
result against its float32 reference before timing it, like every SDPA backend.
"""

from __future__ import annotations

import importlib.util
import math

import torch

NAME = "triton_split_kv"
BLOCK_N = 64  # key/value positions per tile
PROGRAMS_PER_SM = 4  # chunks are sized so that about this many programs run per multiprocessor


def available(device: torch.device) -> bool:
    """CUDA and Triton are both here (never raises)."""
    return device.type == "cuda" and importlib.util.find_spec("triton") is not None


def _splits(batch: int, kv_heads: int, positions: int, device: torch.device) -> tuple[int, int]:
    """The number of chunks and their length in positions (a multiple of BLOCK_N)."""
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    wanted = max(1, PROGRAMS_PER_SM * sms // (batch * kv_heads))
    chunk = BLOCK_N * math.ceil(positions / (wanted * BLOCK_N))
    return math.ceil(positions / chunk), chunk


_OP = None  # the torch op, once made


def _op(device: torch.device):  # type: ignore[no-untyped-def]
    """The kernels and their torch op, made on first use (Triton imported only where it runs)."""
    global _OP
    if _OP is not None:
        return _OP
    if not available(device):
        raise RuntimeError(f"{NAME} needs CUDA and Triton")
    import triton
    import triton.language as tl
    from torch.library import triton_op, wrap_triton

    @triton.jit
    def partial_kernel(  # type: ignore[no-untyped-def]
        q_ptr, k_ptr, v_ptr, mask_ptr, o_ptr, m_ptr, l_ptr, scale,
        sqb, sqh, sqd, skb, skh, skn, skd, svb, svh, svn, svd, smb, smn,
        sob, soh, sos, sod, slb, slh, sls,
        positions, chunk,
        GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK: tl.constexpr,
        HAS_MASK: tl.constexpr,
    ):  # fmt: skip
        b, kv_head, split = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        g = tl.arange(0, GROUP_PAD)
        d = tl.arange(0, HEAD_DIM)
        heads = kv_head * GROUP + g
        in_group = g < GROUP
        q = tl.load(
            q_ptr + b * sqb + heads[:, None] * sqh + d[None, :] * sqd, mask=in_group[:, None], other=0.0
        )
        m_i = tl.full([GROUP_PAD], -1e38, tl.float32)  # finite: a chunk of masked positions weighs 0
        l_i = tl.zeros([GROUP_PAD], tl.float32)
        acc = tl.zeros([GROUP_PAD, HEAD_DIM], tl.float32)
        start = split * chunk
        end = tl.minimum(start + chunk, positions)
        for n0 in range(start, end, BLOCK):
            n = n0 + tl.arange(0, BLOCK)
            inside = n < end
            k = tl.load(k_ptr + b * skb + kv_head * skh + n[:, None] * skn + d[None, :] * skd,
                        mask=inside[:, None], other=0.0)  # fmt: skip
            scores = (tl.dot(q, tl.trans(k)) * scale).to(tl.float32)  # a float argument may come as fp64
            if HAS_MASK:
                bias = tl.load(mask_ptr + b * smb + n * smn, mask=inside, other=0.0)
                scores += bias.to(tl.float32)[None, :]
            scores = tl.where(inside[None, :], scores, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(scores, 1))
            alpha = tl.exp(m_i - m_new)
            p = tl.exp(scores - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            v = tl.load(v_ptr + b * svb + kv_head * svh + n[:, None] * svn + d[None, :] * svd,
                        mask=inside[:, None], other=0.0)  # fmt: skip
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
            m_i = m_new
        o = o_ptr + b * sob + heads[:, None] * soh + split * sos + d[None, :] * sod
        tl.store(o, acc, mask=in_group[:, None])
        tl.store(m_ptr + b * slb + heads * slh + split * sls, m_i, mask=in_group)
        tl.store(l_ptr + b * slb + heads * slh + split * sls, l_i, mask=in_group)

    @triton.jit
    def combine_kernel(  # type: ignore[no-untyped-def]
        o_ptr, m_ptr, l_ptr, out_ptr, splits,
        sob, soh, sos, sod, slb, slh, sls, sxb, sxh, sxd,
        HEAD_DIM: tl.constexpr, SPLITS_PAD: tl.constexpr,
    ):  # fmt: skip
        b, head = tl.program_id(0), tl.program_id(1)
        s = tl.arange(0, SPLITS_PAD)
        d = tl.arange(0, HEAD_DIM)
        used = s < splits
        m = tl.load(m_ptr + b * slb + head * slh + s * sls, mask=used, other=float("-inf"))
        l = tl.load(l_ptr + b * slb + head * slh + s * sls, mask=used, other=0.0)  # noqa: E741
        o = tl.load(
            o_ptr + b * sob + head * soh + s[:, None] * sos + d[None, :] * sod, mask=used[:, None], other=0.0
        )
        weight = tl.exp(m - tl.max(m, 0))
        out = tl.sum(o * weight[:, None], 0) / tl.sum(l * weight, 0)
        tl.store(out_ptr + b * sxb + head * sxh + d * sxd, out.to(out_ptr.dtype.element_ty))

    @triton_op("ctxscope::split_kv_decode", mutates_args=())
    def split_kv_decode(
        query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None, scale: float
    ) -> torch.Tensor:
        batch, heads, _, head_dim = query.shape
        kv_heads, positions = key.shape[1], key.shape[2]
        group = heads // kv_heads
        splits, chunk = _splits(batch, kv_heads, positions, query.device)
        partial = torch.empty(batch, heads, splits, head_dim, device=query.device, dtype=torch.float32)
        maxima = torch.empty(batch, heads, splits, device=query.device, dtype=torch.float32)
        sums = torch.empty_like(maxima)
        out = torch.empty_like(query)
        mask_arg = query if mask is None else mask  # an unread pointer when there is no mask
        mask_strides = (
            (0, 0) if mask is None else (mask.stride(0) if mask.shape[0] > 1 else 0, mask.stride(-1))
        )
        wrap_triton(partial_kernel)[(batch, kv_heads, splits)](
            query, key, value, mask_arg, partial, maxima, sums, scale,
            query.stride(0), query.stride(1), query.stride(3),
            key.stride(0), key.stride(1), key.stride(2), key.stride(3),
            value.stride(0), value.stride(1), value.stride(2), value.stride(3),
            *mask_strides,
            partial.stride(0), partial.stride(1), partial.stride(2), partial.stride(3),
            maxima.stride(0), maxima.stride(1), maxima.stride(2),
            positions, chunk,
            GROUP=group, GROUP_PAD=max(16, triton.next_power_of_2(group)), HEAD_DIM=head_dim, BLOCK=BLOCK_N,
            HAS_MASK=mask is not None,
        )  # fmt: skip
        wrap_triton(combine_kernel)[(batch, heads)](
            partial, maxima, sums, out, splits,
            partial.stride(0), partial.stride(1), partial.stride(2), partial.stride(3),
            maxima.stride(0), maxima.stride(1), maxima.stride(2),
            out.stride(0), out.stride(1), out.stride(3),
            HEAD_DIM=head_dim, SPLITS_PAD=triton.next_power_of_2(splits),
        )  # fmt: skip
        return out

    _OP = split_kv_decode
    return _OP


def supports(query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None) -> bool:
    """One query token per head, a power-of-two head dim of 16 or more, query heads a multiple of the
    key/value heads (one batch size and head dim for all), and a mask (if any) of one row per batch
    over the positions."""
    if query.dim() != 4 or key.dim() != 4:
        return False
    batch, heads, q_len, head_dim = query.shape
    if key.shape[0] != batch or key.shape[3] != head_dim:
        return False
    if q_len != 1 or head_dim < 16 or head_dim & (head_dim - 1) or heads % key.shape[1]:
        return False
    if mask is None:
        return True
    return (
        mask.dim() == 4
        and mask.shape[1] == mask.shape[2] == 1
        and mask.shape[0] in (1, batch)
        and mask.shape[3] == key.shape[2]
    )


def split_kv_decode(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Attention of (B, H, 1, D) queries over (B, Hkv, L, D) keys and values with an additive float
    mask broadcast as (B or 1, 1, 1, L): (B, H, 1, D), as `scaled_dot_product_attention` with
    `enable_gqa=True` returns it."""
    if not supports(query, key, mask) or value.shape != key.shape:
        raise ValueError(f"{NAME} takes one query token per head and a (B, 1, 1, L) mask")
    if mask is not None and mask.dtype == torch.bool:
        raise ValueError(f"{NAME} takes a float mask")
    # once the op is made, nothing here but shape checks: torch.compile traces it without a graph break
    op = _OP if _OP is not None else _op(query.device)
    return op(query, key, value, mask, scale if scale is not None else query.shape[-1] ** -0.5)
