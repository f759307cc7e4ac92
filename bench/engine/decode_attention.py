"""Benchmark: one decode step of attention at long context, per kernel, in the shapes of the study models.

The engine's decode attention is SDPA with native GQA on the backend its trial picks (cuDNN on the
H200). A query of one token against a long cache leaves most of the GPU idle unless the kernel splits
the cache across blocks (split-KV, "flash decoding"); this times what each candidate reaches against
the bytes it must read. Candidates: SDPA on each backend (`enable_gqa=True`, the float mask the static
cache passes), and FlexAttention compiled by torch.compile (its decode kernel splits the cache; the
same mask added by a score_mod), and FlashAttention-2 as PyTorch vendors it, called without a mask:
`flash-seqused` through `aten._flash_attention_forward` in its variable-length form with `seqused_k`
(a device tensor holding how many cached positions are written, so the static cache's unwritten tail
is never read and the call is graph-capturable at a fixed buffer size; the cache read in place through
a transposed view, GQA native), and `sdpa-flash-sliced` (SDPA's flash backend on the written
positions only: a bound, not graph-safe in a decode loop). Each call is captured in a CUDA graph and
replayed, so launch cost is not counted; CUDA events over 200 replays, median of 5. Every output is
checked against a float32 reference (max |difference|); the kernels of one eager call are listed.

    python bench/engine/decode_attention.py --lengths 32768,131072 --out decode_attention.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

# (query heads, key/value heads, head dim, attention layers) from the zoo's configs
SHAPES = {
    "qwen2.5-0.5b": (14, 2, 64, 24),
    "llama3.2-1b": (32, 8, 64, 16),
    "falcon-h1-0.5b": (8, 2, 64, 36),
}
BACKENDS = {
    "sdpa-cudnn": SDPBackend.CUDNN_ATTENTION,
    "sdpa-flash": SDPBackend.FLASH_ATTENTION,
    "sdpa-efficient": SDPBackend.EFFICIENT_ATTENTION,
}


UNWRITTEN = 64  # positions at the end of the cache buffer that the static cache has not written yet


def inputs(shape: tuple[int, int, int, int], length: int) -> tuple[torch.Tensor, ...]:
    heads, kv_heads, dim, _ = shape
    generator = torch.Generator(device="cuda").manual_seed(0)
    make = lambda h, n: torch.randn(1, h, n, dim, generator=generator, device="cuda", dtype=torch.bfloat16)  # noqa: E731
    q, k, v = make(heads, 1), make(kv_heads, length), make(kv_heads, length)
    mask = torch.zeros(1, 1, 1, length, device="cuda", dtype=torch.bfloat16)
    mask[..., length - UNWRITTEN :] = torch.finfo(torch.bfloat16).min  # the static cache's unwritten tail
    return q, k, v, mask


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    groups = q.shape[1] // k.shape[1]
    k32, v32 = (t.float().repeat_interleave(groups, dim=1) for t in (k, v))
    scores = q.float() @ k32.transpose(-1, -2) / q.shape[-1] ** 0.5 + mask.float()
    return torch.softmax(scores, dim=-1) @ v32


def candidates(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> dict[str, Callable]:
    from torch.nn.attention.flex_attention import flex_attention

    def sdpa_on(backend: SDPBackend) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            with sdpa_kernel([backend]):
                return torch.nn.functional.scaled_dot_product_attention(
                    q, k, v, attn_mask=mask, enable_gqa=True
                )

        return run

    flex = torch.compile(flex_attention, dynamic=False)

    def add_mask(score: torch.Tensor, b: Any, h: Any, q_idx: Any, kv_idx: Any) -> torch.Tensor:
        return score + mask[b, 0, q_idx, kv_idx]

    written = k.shape[2] - UNWRITTEN

    def sliced() -> torch.Tensor:
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            return torch.nn.functional.scaled_dot_product_attention(
                q, k[:, :, :written], v[:, :, :written], enable_gqa=True
            )

    runs = {name: sdpa_on(backend) for name, backend in BACKENDS.items()}
    runs["flex-compiled"] = lambda: flex(q, k, v, score_mod=add_mask, enable_gqa=True)
    runs["flash-seqused"] = flash_seqused(q, k, v, written)
    runs["sdpa-flash-sliced"] = sliced
    return runs


def flash_seqused(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, written: int) -> Callable:
    """FlashAttention-2's variable-length call on one sequence: query (1, heads, dim), the cache as
    (positions, kv heads, dim) views of the (1, kv heads, positions, dim) buffers (no copy), and
    `seqused_k` holding the written length on the device."""
    device = q.device
    cum_q = torch.tensor([0, 1], dtype=torch.int32, device=device)
    cum_k = torch.tensor([0, k.shape[2]], dtype=torch.int32, device=device)
    used = torch.tensor([written], dtype=torch.int32, device=device)
    query = q[0].transpose(0, 1)  # (1, heads, dim)
    key, value = k[0].transpose(0, 1), v[0].transpose(0, 1)  # (positions, kv heads, dim), strided

    def run() -> torch.Tensor:
        out = torch.ops.aten._flash_attention_forward(
            query, key, value, cum_q, cum_k, 1, k.shape[2], 0.0, False, False, seqused_k=used
        )[0]
        return out.transpose(0, 1).unsqueeze(0)  # (1, heads, 1, dim)

    return run


def graph_us(run: Callable[[], torch.Tensor], replays: int = 200, repeats: int = 5) -> list[float]:
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            run()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        run()
    samples = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(replays):
            graph.replay()
        end.record()
        torch.cuda.synchronize()
        samples.append(start.elapsed_time(end) * 1e3 / replays)
    return samples


def kernel_names(run: Callable[[], torch.Tensor]) -> list[str]:
    """The GPU kernels one eager call launches (torch.profiler), names cut to 90 characters."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        run()
        torch.cuda.synchronize()
    return [event.name[:90] for event in prof.events() if event.device_type == torch.autograd.DeviceType.CUDA]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lengths", default="32768,131072")
    parser.add_argument("--models", default=",".join(SHAPES))
    parser.add_argument("--kernels", help="comma-separated candidates to run (default: all)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    rows = []
    with torch.inference_mode():
        for model in args.models.split(","):
            shape = SHAPES[model]
            for length in (int(n) for n in args.lengths.split(",")):
                q, k, v, mask = inputs(shape, length)
                want = reference(q, k, v, mask)
                kv_bytes = 2 * k.numel() * k.element_size()
                for name, run in candidates(q, k, v, mask).items():
                    if args.kernels and name not in args.kernels.split(","):
                        continue
                    row: dict[str, Any] = {"model": model, "context_len": length, "kernel": name}
                    try:
                        row["max_abs_diff"] = float((run().float() - want).abs().max())
                        samples = graph_us(run)
                        row["kernels_per_call"] = kernel_names(run)
                    except Exception as exc:  # an unavailable backend is a row, not a stop
                        row["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
                        rows.append(row)
                        print(f"{model:15} {length:>7} {name:15} {row['error'][:80]}")
                        continue
                    median = statistics.median(samples)
                    row.update(
                        us_per_layer=median,
                        us_samples=samples,
                        kv_bytes_per_layer=kv_bytes,
                        tb_per_s=kv_bytes / median / 1e6,
                        us_per_step=median * shape[3],
                    )
                    rows.append(row)
                    print(
                        f"{model:15} {length:>7} {name:15} {median:8.1f} us/layer ({min(samples):.1f}-"
                        f"{max(samples):.1f}) {row['tb_per_s']:5.2f} TB/s  x{shape[3]} layers = "
                        f"{row['us_per_step'] / 1e3:.3f} ms  max|diff| {row['max_abs_diff']:.2g}"
                    )
    report = {
        "torch": torch.__version__,
        "flash_attention_forward_schema": str(torch.ops.aten._flash_attention_forward.default._schema),
        "cudnn": torch.backends.cudnn.version(),
        "method": "one attention call captured in a CUDA graph, replayed 200 times per sample (CUDA events);"
        " us_samples: 5 samples, us per call each; us_per_layer: their median; tb_per_s: the key and value"
        " bytes of one layer over that median; us_per_step: the median times the model's attention layers",
        "rows": rows,
    }
    args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
