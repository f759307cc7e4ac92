"""Benchmark: the split-KV Triton decode attention (`agent/engine/splitkv.py`) against SDPA's backends.

At each model's attention shape and each cached length: one query token over a (1, kv heads, length,
dim) bf16 cache with the static-cache decode's float mask (the last eighth masked, as the attention
trial builds it); every candidate's max |difference| from the float32 reference, its time replayed
from a CUDA graph (mean of `--reps` calls, CUDA events, as the trial times decode) and the cache
bandwidth that time implies (keys and values read once). Then the kernels one cuDNN call launches
(torch.profiler), and the Triton op compiled by torch.compile and captured in a CUDA graph against its
eager call.

    python bench/engine/split_kv_decode.py --lengths 4096,32768 --out split-kv.json
"""

from __future__ import annotations

import argparse
import functools
import json
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from torch.nn.attention import SDPBackend

from ctxscope.agent.engine import attention, splitkv

SHAPES = {  # query heads, key/value heads, head dim of each model's attention layers
    "falcon-h1-0.5b": attention.Shape(8, 2, 64),
    "qwen2.5-0.5b": attention.Shape(14, 2, 64),
    "llama-3.2-1b": attention.Shape(32, 8, 64),
}


def cudnn_kernels(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> dict[str, int]:
    """Kernel name -> launches of one cuDNN SDPA decode call."""
    from torch.profiler import ProfilerActivity, profile

    run = functools.partial(attention._run_on, SDPBackend.CUDNN_ATTENTION, q, k, v, mask, True)
    run()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        run()
        torch.cuda.synchronize()
    return dict(
        Counter(e.name[:140] for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)
    )


def compiled_in_graph(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor
) -> dict[str, Any]:
    """The op through torch.compile, captured in a CUDA graph and replayed, against its eager call."""
    step = torch.compile(lambda q, k, v, m: splitkv.split_kv_decode(q, k, v, m), dynamic=False)
    eager = splitkv.split_kv_decode(q, k, v, mask)
    step(q, k, v, mask)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = step(q, k, v, mask)
    graph.replay()
    torch.cuda.synchronize()
    return {"max_abs_diff_from_eager": float((out.float() - eager.float()).abs().max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lengths", default="4096,32768")
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    device, dtype = torch.device("cuda"), torch.bfloat16
    report: dict[str, Any] = {
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(),
        "cudnn": torch.backends.cudnn.version(),
        "rows": [],
    }
    with torch.inference_mode():
        for model, shape in SHAPES.items():
            for length in (int(x) for x in args.lengths.split(",")):
                q, k, v, mask = attention._inputs(shape, "decode", length, dtype, device)
                assert mask is not None
                want = attention._reference(q, k, v, mask)
                cache_bytes = 2 * k.numel() * k.element_size()
                row: dict[str, Any] = {"model": model, "length": length, "cache_bytes": cache_bytes}
                runs = {
                    splitkv.NAME: functools.partial(splitkv.split_kv_decode, q, k, v, mask),
                    "cudnn_attention": functools.partial(
                        attention._run_on, SDPBackend.CUDNN_ATTENTION, q, k, v, mask, True
                    ),
                }
                for name, run in runs.items():
                    diff = float((run().float() - want).abs().max())
                    us = attention._graph_us(run, args.reps)
                    row[name] = {"max_abs_diff": diff, "us": us, "cache_tb_per_s": cache_bytes / us / 1e6}
                row["cudnn_kernels_per_call"] = cudnn_kernels(q, k, v, mask)
                if length == 4096:
                    row["compiled_in_graph"] = compiled_in_graph(q, k, v, mask)
                report["rows"].append(row)
                print(
                    f"{model} @ {length}: "
                    + ", ".join(
                        f"{name} {row[name]['us']:.1f} us ({row[name]['cache_tb_per_s']:.2f} TB/s, "
                        f"diff {row[name]['max_abs_diff']:.2g})"
                        for name in runs
                    ),
                    flush=True,
                )
                args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
