"""The split-KV Triton decode attention: which inputs it takes, its place among the attention trial's
decode candidates, and (on a CUDA device with Triton) its output against the float32 reference, eager
and compiled into a CUDA graph."""

from __future__ import annotations

import pytest
import torch

from ctxscope.agent.engine import attention, splitkv

on_gpu = pytest.mark.skipif(
    not splitkv.available(torch.device("cuda")) or not torch.cuda.is_available(),
    reason="the kernels need CUDA and Triton",
)


@pytest.mark.parametrize(
    ("q_shape", "k_shape", "mask_shape", "taken"),
    [
        ((1, 8, 1, 64), (1, 2, 100, 64), (1, 1, 1, 100), True),
        ((2, 14, 1, 64), (2, 2, 100, 64), (2, 1, 1, 100), True),
        ((2, 8, 1, 128), (2, 8, 100, 128), None, True),
        ((1, 8, 2, 64), (1, 2, 100, 64), (1, 1, 2, 100), False),  # two query tokens: prefill's
        ((1, 8, 1, 80), (1, 2, 100, 80), None, False),  # head dim not a power of two
        ((1, 6, 1, 64), (1, 4, 100, 64), None, False),  # query heads not a multiple of the kv heads
        ((1, 8, 1, 64), (1, 2, 100, 64), (1, 1, 1, 99), False),  # mask not over every position
        ((2, 8, 1, 64), (2, 2, 100, 64), (3, 1, 1, 100), False),  # mask of another batch
    ],
)
def test_it_takes_one_query_token_per_head_and_a_row_mask(
    q_shape: tuple[int, ...], k_shape: tuple[int, ...], mask_shape: tuple[int, ...] | None, taken: bool
) -> None:
    mask = None if mask_shape is None else torch.zeros(mask_shape)
    assert splitkv.supports(torch.zeros(q_shape), torch.zeros(k_shape), mask) == taken


def test_a_cpu_says_it_cannot_run_the_kernel() -> None:
    assert not splitkv.available(torch.device("cpu"))
    with pytest.raises(RuntimeError, match="needs CUDA and Triton"):
        splitkv.split_kv_decode(
            torch.zeros(1, 8, 1, 64), torch.zeros(1, 2, 16, 64), torch.zeros(1, 2, 16, 64)
        )


def test_it_is_a_decode_candidate_of_the_trial_and_named_when_left_out() -> None:
    """Decode gets the kernel as one more candidate, prefill does not; a CPU notes why it was left out
    and keeps an SDPA backend."""
    shape = attention.Shape(heads=4, kv_heads=2, head_dim=16)
    choice = attention.calibrate(shape, torch.float32, torch.device("cpu"), length=16, reps=2)
    assert choice.trials[f"decode/{splitkv.NAME}"] == "unavailable (needs CUDA and Triton)"
    assert f"prefill/{splitkv.NAME}" not in choice.trials
    assert choice.decode in attention.CANDIDATES
    assert choice.record()["attention_backend_decode"] == attention._name(choice.decode)


def test_once_made_the_op_is_traced_by_torch_compile_without_a_graph_break(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The Falcon-H1 step once broke at every attention layer (21 breaks, 3.65 against 1.76 ms a step):
    the call checked for Triton with importlib each time. With a made op standing in (the Triton one
    cannot run here), the wrapper around it must add no break."""
    monkeypatch.setattr(
        splitkv,
        "_OP",
        lambda q, k, v, mask, scale: torch.nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, scale=scale, enable_gqa=True
        ),
    )
    q, k, v = torch.randn(1, 8, 1, 64), torch.randn(1, 2, 32, 64), torch.randn(1, 2, 32, 64)
    mask = torch.zeros(1, 1, 1, 32)
    explained = torch._dynamo.explain(splitkv.split_kv_decode)(q, k, v, mask)
    assert explained.graph_break_count == 0, explained.break_reasons


def _reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Float32 attention with keys and values repeated per query head and the mask added."""
    groups = q.shape[1] // k.shape[1]
    scores = q.float() @ k.float().repeat_interleave(groups, 1).transpose(-1, -2) / q.shape[-1] ** 0.5
    if mask is not None:
        scores = scores + mask.float()
    return torch.softmax(scores, dim=-1) @ v.float().repeat_interleave(groups, 1)


@on_gpu
@pytest.mark.parametrize(
    ("batch", "heads", "kv_heads", "head_dim", "positions", "masked"),
    [
        (1, 8, 2, 64, 4096, 512),  # Falcon-H1-0.5B's shape, the static cache's unwritten tail masked
        (1, 14, 2, 64, 1000, 0),  # Qwen2.5-0.5B's, a length that is no multiple of a tile
        (2, 32, 8, 64, 32768, 3000),  # Llama-3.2-1B's, whole chunks masked
        (2, 16, 16, 128, 257, 1),
    ],
)
def test_it_agrees_with_the_float32_reference(
    batch: int, heads: int, kv_heads: int, head_dim: int, positions: int, masked: int
) -> None:
    generator = torch.Generator("cuda").manual_seed(0)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, device="cuda", dtype=torch.bfloat16)

    q, k, v = (
        randn(batch, heads, 1, head_dim),
        randn(batch, kv_heads, positions, head_dim),
        randn(batch, kv_heads, positions, head_dim),
    )
    mask = torch.zeros(batch, 1, 1, positions, device="cuda", dtype=torch.bfloat16)
    mask[0, ..., positions - masked :] = torch.finfo(torch.bfloat16).min
    for m in (mask, None):
        out = splitkv.split_kv_decode(q, k, v, m)
        assert out.shape == q.shape and out.dtype == q.dtype
        assert float((out.float() - _reference(q, k, v, m)).abs().max()) < attention.TOLERANCE[torch.bfloat16]


@on_gpu
def test_compiled_and_captured_in_a_cuda_graph_it_gives_the_eager_output() -> None:
    q = torch.randn(1, 8, 1, 64, device="cuda", dtype=torch.bfloat16)
    k, v = torch.randn(2, 1, 2, 2048, 64, device="cuda", dtype=torch.bfloat16)
    mask = torch.zeros(1, 1, 1, 2048, device="cuda", dtype=torch.bfloat16)
    mask[..., 2000:] = torch.finfo(torch.bfloat16).min
    eager = splitkv.split_kv_decode(q, k, v, mask)
    step = torch.compile(
        lambda q, k, v, m: splitkv.split_kv_decode(q, k, v, m), dynamic=False, fullgraph=True
    )
    step(q, k, v, mask)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = step(q, k, v, mask)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, eager)


@on_gpu
def test_a_gpu_trial_times_it_like_the_sdpa_backends() -> None:
    shape = attention.Shape(heads=8, kv_heads=2, head_dim=64)
    choice = attention.calibrate(shape, torch.bfloat16, torch.device("cuda"), length=1024, reps=4)
    assert choice.trials[f"decode/{splitkv.NAME}"].endswith(tuple("0123456789"))
    assert " us, max |diff| " in choice.trials[f"decode/{splitkv.NAME}"]
