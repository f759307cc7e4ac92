"""Benchmark: where a graph-replayed decode step spends its time, and what compiling the step saves.

For each model at one context: the uncompiled step in a CUDA graph (`decode = "graph"`: the static
cache's for transformers models, mamba_ssm's own for native ones) timed by CUDA events over
back-to-back replays; one eager step profiled with torch.profiler (kernel launches per step, summed
kernel time, the kernels that take most); then the engine's default path, the step compiled by
torch.compile (inductor, no cudagraphs of its own: the engine captures the graph), timed the same way,
one replay of it profiled the same way (what is left after fusion: kernels, their summed time against
the step's), and its first step checked against a fresh eager decoder's (max |logit difference|,
argmax). `--inductor` turns on inductor options for the compile (e.g. `max_autotune`,
`coordinate_descent_tuning`, or a nested one such as `triton.enable_pdl`, programmatic dependent
launch on Hopper), to see what they would save; `--top N` keeps the N costliest kernels of each
profile; `--decompose-mm N` turns on inductor's
`decompose_mm_pass` for matrix products of one row whose other two sizes are below N (the decode
step's projections: each becomes a multiply and a sum that inductor generates as a reduction kernel,
with the bias and what follows fused into it, instead of a cuBLAS call), and records how many it
rewrote (the engine's own pass is then off, so that inductor's is what is measured). The engine's
compile now does the same through its own pass (`agent/engine/onerow.py`); `--without-one-row`
compiles without it, for the comparison; `--without-conv` compiles with the pass but without its
rewrite of depthwise convolutions of few positions (a Mamba-2 mixer's decode-step conv), inductor's
caches off in that process so that its graph is neither taken from nor left for a run with it;
`--without-combo` compiles without inductor's combo kernels, which the engine's compile also turns on
(independent kernels sharing launches); `--without-pdl` without programmatic dependent launch, which
the engine's compile turns on where the GPU has it (compute capability 9.0+).

    python bench/engine/decode_overhead.py --models qwen2.5-0.5b --length 4096 --out overhead.json
    python bench/engine/decode_overhead.py --models falcon-h1-0.5b,mamba2-780m --length 32768 \
        --inductor max_autotune --out overhead-32k.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from ctxscope.agent.engine import decoding, forward, hf_decode, native_decode, point
from ctxscope.agent.engine.graphed import StepCompile


def replay_ms(decoder: Any, steps: int, repeats: int) -> list[float]:
    """Per-token milliseconds of `repeats` runs of `steps` back-to-back steps (CUDA events)."""
    samples = []
    for _ in range(repeats):
        decoder.rewind()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(steps):
            decoder.step()
        end.record()
        torch.cuda.synchronize()
        samples.append(start.elapsed_time(end) / steps)
    return samples


def kernel_profile(decoder: Any, top: int) -> dict[str, Any]:
    """One step under torch.profiler (a graph replay where the decoder has one): kernel count, summed
    kernel time, the top kernels."""
    from torch.profiler import ProfilerActivity, profile

    decoder.rewind()
    decoder.step()  # warm
    decoder.rewind()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        wall = time.perf_counter()
        decoder.step()
        torch.cuda.synchronize()
        wall_ms = (time.perf_counter() - wall) * 1e3
    by_name: dict[str, list[float]] = defaultdict(list)
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            by_name[event.name].append(event.device_time / 1e3)
    if not by_name:  # e.g. kernels replayed inside a CUDA graph that the profiler does not report
        return {
            "kernels_per_step": None,
            "kernel_ms_per_step": None,
            "wall_ms_under_profiler": wall_ms,
            "note": "the profiler reported no kernels for this step: not measured",
        }
    total = sum(sum(v) for v in by_name.values())
    ranked = sorted(by_name.items(), key=lambda kv: -sum(kv[1]))[:top]
    return {
        "kernels_per_step": sum(len(v) for v in by_name.values()),
        "kernel_ms_per_step": total,
        "wall_ms_under_profiler": wall_ms,
        "top": [{"kernel": name[:120], "count": len(v), "ms": sum(v)} for name, v in ranked],
    }


def kernels_phrase(profile: dict[str, Any]) -> str:
    if profile["kernels_per_step"] is None:
        return "kernels not seen by the profiler"
    return f"{profile['kernels_per_step']} kernels, {profile['kernel_ms_per_step']:.3f} ms of kernel time"


def agreement(fast: Any, eager: Any) -> dict[str, float | bool]:
    """The fast decoder's first step against the eager decoder's, from the same prompt state."""
    fast.rewind()
    eager.rewind()
    fast.step()
    eager.step()
    a, b = fast.last_logits.float(), eager.last_logits.float()
    return {
        "max_abs_diff": float((a - b).abs().max()),
        "max_abs_logit": float(b.abs().max()),
        "same_argmax": bool(torch.equal(a.argmax(-1), b.argmax(-1))),
    }


def summary(samples: list[float]) -> dict[str, float]:
    q = statistics.quantiles(samples, n=4)
    return {"median_ms": statistics.median(samples), "iqr_ms": q[2] - q[0], "n": len(samples)}


def eager_decoder(session: point.Session, ids: torch.Tensor, steps: int) -> Any:
    """The uncompiled step without a graph, from the prompt."""
    if session.runtime == "mamba_ssm":
        return native_decode.NativeDecoder(session.module, ids, steps, graph=False)
    return hf_decode.HFStaticDecoder(session.module, ids, steps, graph=False)


def measure(
    name: str,
    length: int,
    steps: int,
    repeats: int,
    compiled: bool,
    one_row: bool,
    combo: bool,
    pdl: bool,
    top: int,
) -> dict[str, Any]:
    session = point.Session(point.ModelChoice(name, "bf16", "cuda"))
    ids = decoding.synthetic_prompt(session.vocab_size, length, seed=0, device=session.device)
    row: dict[str, Any] = {"model": name, "context_len": length}
    with torch.inference_mode():
        eager = eager_decoder(session, ids, steps)
        row["profile"] = kernel_profile(eager, top=top)
        del eager
        plain: Any = forward.make_decoder(session.runtime, session.module, ids, steps, "graph")
        row["graph"] = {"path": plain.path, **summary(replay_ms(plain, steps, repeats))}
        del plain
        if compiled:  # the engine's default path: the compiled step captured in a graph
            started = time.perf_counter()
            fast: Any = forward.make_decoder(
                session.runtime, session.module, ids, steps, "auto", StepCompile(one_row, combo, pdl)
            )
            row["compiled"] = {
                "path": fast.path,
                "note": getattr(fast, "note", None),
                "graph_breaks": getattr(fast, "graph_breaks", None),
                "one_row_products": getattr(fast, "one_row_products", None),
                "combo_kernels": getattr(fast, "combo_path", None),
                "dependent_launch": getattr(fast, "pdl_path", None),
                "prefill_compile_and_capture_s": time.perf_counter() - started,
                **summary(replay_ms(fast, steps, repeats)),
                "profile": kernel_profile(fast, top=top),
                "agreement_with_eager": agreement(fast, eager_decoder(session, ids, steps)),
            }
            del fast
    point.free(session.device)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="qwen2.5-0.5b")
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=64, help="back-to-back steps per timed sample")
    parser.add_argument("--repeats", type=int, default=20, help="timed samples per path")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument(
        "--inductor",
        default="",
        help="comma-separated torch._inductor.config flags to set true (nested: triton.enable_pdl)",
    )
    parser.add_argument("--top", type=int, default=12, help="kernels kept per profile, costliest first")
    parser.add_argument(
        "--decompose-mm",
        type=int,
        default=0,
        metavar="N",
        help="decompose one-row matrix products whose other sizes are below N (0: off)",
    )
    parser.add_argument(
        "--without-one-row",
        action="store_true",
        help="compile the step without the engine's one-row reductions (agent/engine/onerow.py)",
    )
    parser.add_argument(
        "--without-conv",
        action="store_true",
        help="compile the step without the pass's depthwise-convolution rewrite (inductor's caches off)",
    )
    parser.add_argument(
        "--without-combo",
        action="store_true",
        help="compile the step without inductor's combo kernels (the engine's default has them)",
    )
    parser.add_argument(
        "--without-pdl",
        action="store_true",
        help="compile the step without programmatic dependent launch (the engine's default on Hopper+)",
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    engine_one_row = not (args.without_one_row or args.decompose_mm)
    import torch._inductor.config as inductor
    from torch._dynamo.utils import counters

    if args.decompose_mm:  # read when inductor first imports the pass: set before any compile
        inductor.post_grad_fusion_options = {
            "decompose_mm_pass": {
                "min_first_dimension_decomposition": 1,
                "max_other_dimension_decomposition": args.decompose_mm,
            }
        }

    if args.without_conv:
        import torch._functorch.config as functorch

        from ctxscope.agent.engine import onerow

        onerow._is_few_position_depthwise = lambda *_: False  # type: ignore[assignment]
        inductor.fx_graph_cache = False
        functorch.enable_autograd_cache = False

    flags = [flag for flag in args.inductor.split(",") if flag]
    for flag in flags:
        *parents, leaf = flag.split(".")
        owner: Any = inductor
        for part in parents:
            owner = getattr(owner, part, None)
        if owner is None or not hasattr(owner, leaf):
            parser.error(f"torch._inductor.config has no option {flag!r}")
        setattr(owner, leaf, True)
    rows = []
    for name in args.models.split(","):
        row = measure(
            name,
            args.length,
            args.steps,
            args.repeats,
            not args.no_compile,
            engine_one_row,
            not args.without_combo,
            not args.without_pdl,
            args.top,
        )
        rows.append(row)
        line = (
            f"{name} @ {args.length}: graph {row['graph']['median_ms']:.3f} ms/token; "
            f"eager step {kernels_phrase(row['profile'])}"
        )
        if "compiled" in row:
            c = row["compiled"]
            line += (
                f"; compiled {c['median_ms']:.3f} ms/token ({c['path']}), {kernels_phrase(c['profile'])}, "
                f"max |dlogit| {c['agreement_with_eager']['max_abs_diff']:.3g}"
            )
        print(line, flush=True)
        report = {
            "torch": torch.__version__,
            "inductor_flags": flags,
            "decompose_mm_below": args.decompose_mm or None,
            "engine_one_row_reductions": engine_one_row,
            "engine_combo_kernels": not args.without_combo,
            "engine_dependent_launch": not args.without_pdl,
            "engine_conv_rewrite": engine_one_row and not args.without_conv,
            "decomposed": {k: v for k, v in counters["inductor"].items() if k.startswith("decompose")},
            "rows": rows,
        }
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
