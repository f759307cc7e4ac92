"""Check: the logits of every decode path against a full recompute without cache.

Each path decodes from the same prompt, fed the reference's greedy tokens (teacher forcing), so all
see one token sequence; the reference recomputes the whole sequence at every step. transformers
models (reference: `use_cache=False`, eager attention): eager on transformers' own cache, the static
cache without a graph, and the static cache captured in a CUDA graph, compiled and not (GPU only);
each under every attention mode asked for (`sdpa-gqa`: SDPA with native GQA on the calibrated
backend; `transformers-sdpa`: transformers' default). Native mamba_ssm models (reference: the
chunked scan without state, GPU only): mamba_ssm's eager step, its own CUDA graph, and the compiled
step in the decoder's graph.

    python bench/engine/decode_agreement.py --models zamba2-1.2b,falcon-h1-0.5b --length 2048 --out agree.json
    python bench/engine/decode_agreement.py --models zamba2-1.2b --length 32 --out /tmp/a.json --dry-run
    python bench/engine/decode_agreement.py --models qwen2.5-0.5b --attention sdpa-gqa --out agree.json
    python bench/engine/decode_agreement.py --models mamba2-780m,mamba-790m --attention sdpa-gqa --out a.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ctxscope.agent.engine import decoding, hf_decode, native_decode, point
from ctxscope.agent.engine.manifest import collect


def reference_logits(module: torch.nn.Module, ids: torch.Tensor, steps: int) -> list[torch.Tensor]:
    """Last-position logits of the prompt and of each greedy continuation, recomputed from scratch
    with transformers' eager attention (plain matmul and softmax, no SDPA kernel)."""
    chosen = module.config._attn_implementation
    module.set_attn_implementation("eager")
    try:
        return _recompute(module, ids, steps)
    finally:
        module.set_attn_implementation(chosen)


def greedy_recompute(
    last_logits: Callable[[torch.Tensor], torch.Tensor], ids: torch.Tensor, steps: int
) -> list[torch.Tensor]:
    """Last-position logits of `ids` and of each greedy continuation, every sequence from scratch."""
    out = []
    tokens = ids
    for _ in range(steps + 1):
        logits = last_logits(tokens)[:, -1:].float()
        out.append(logits)
        tokens = torch.cat([tokens, logits.argmax(-1)], dim=1)
    return out


def _recompute(module: torch.nn.Module, ids: torch.Tensor, steps: int) -> list[torch.Tensor]:
    return greedy_recompute(
        lambda tokens: module(input_ids=tokens, use_cache=False, logits_to_keep=1).logits, ids, steps
    )


def hf_paths(module: torch.nn.Module, ids: torch.Tensor, steps: int) -> dict[str, Any]:
    """Every transformers decode path against the recompute."""
    reference = reference_logits(module, ids, steps)
    window = steps + 1
    paths: dict[str, Any] = {
        "eager_dynamic_cache": compare(hf_decode.HFEagerDecoder(module, ids, window), reference, False)
    }
    variants = [(False, False)] + ([(True, False), (True, True)] if ids.device.type == "cuda" else [])
    for graph, compile_step in variants:
        decoder = hf_decode.HFStaticDecoder(module, ids, window, graph=graph, compile_step=compile_step)
        paths[decoder.path] = compare(decoder, reference, True)
        if decoder.note is not None:
            paths[decoder.path + "_note"] = decoder.note
        del decoder
    return paths


def native_reference_logits(module: torch.nn.Module, ids: torch.Tensor, steps: int) -> list[torch.Tensor]:
    """The same for a mamba_ssm model: each sequence through its chunked scan, no state kept."""
    return greedy_recompute(lambda tokens: module(tokens, num_last_tokens=1).logits, ids, steps)


def native_paths(module: torch.nn.Module, ids: torch.Tensor, steps: int) -> dict[str, Any]:
    """Every mamba_ssm decode path against the native recompute."""
    reference = native_reference_logits(module, ids, steps)
    window = steps + 1
    paths: dict[str, Any] = {}
    for graph in (False, True):
        decoder = native_decode.NativeDecoder(module, ids, window, graph=graph)
        paths[decoder.path] = compare(decoder, reference, False)
        del decoder
    compiled = native_decode.NativeCompiledDecoder(module, ids, window)
    if compiled.note is not None:
        paths["compiled_cuda_graph_mamba_ssm_note"] = compiled.note
    if compiled.graph is not None:
        paths[compiled.path] = compare(compiled, reference, True)
    return paths


def compare(decoder: Any, reference: list[torch.Tensor], static: bool) -> list[dict[str, float | bool]]:
    rows = []
    for k in range(1, len(reference)):
        fed = reference[k - 1].argmax(-1)
        if static:
            decoder.token.copy_(fed)
        else:
            decoder.token = fed.clone()
        decoder.step()
        got, want = decoder.last_logits[:, -1:].float(), reference[k]
        top2 = want.flatten().topk(2).values
        rows.append(
            {
                "max_abs_diff": float((got - want).abs().max()),
                "max_abs_logit": float(want.abs().max()),
                "same_argmax": bool(torch.equal(got.argmax(-1), want.argmax(-1))),
                # how far the recompute's best token led its second: a flip within max_abs_diff is a tie
                "reference_top2_margin": float(top2[0] - top2[1]),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="zamba2-1.2b")
    parser.add_argument("--length", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--attention", default="sdpa-gqa,transformers-sdpa", help="comma-separated modes")
    parser.add_argument("--dry-run", action="store_true", help="tiny models on the CPU, to check the script")
    args = parser.parse_args()
    device = "cpu" if args.dry_run else "cuda"
    report: dict[str, Any] = {
        "command": "python bench/engine/decode_agreement.py " + " ".join(sys.argv[1:]),
        "manifest": collect(device),
    }
    done_native: set[str] = set()
    for name, mode in itertools.product(args.models.split(","), args.attention.split(",")):
        if name in done_native:
            continue  # no attention to choose: one run per native model
        choice = point.ModelChoice(name, args.precision, device, tiny=args.dry_run, attention=mode)
        session = point.Session(choice)
        ids = decoding.synthetic_prompt(session.vocab_size, args.length, seed=0, device=session.device)
        with torch.inference_mode():
            if session.runtime == "mamba_ssm":
                done_native.add(name)
                paths = native_paths(session.module, ids, args.steps)
            else:
                paths = hf_paths(session.module, ids, args.steps)
        paths["implementation"] = session.implementation()
        report[f"{name} {mode}"] = paths
        for path, rows in paths.items():
            if isinstance(rows, dict):
                continue
            if isinstance(rows, str):
                print(f"{name} {mode} {path}: {rows}")
                continue
            worst = max(r["max_abs_diff"] for r in rows)
            same = sum(bool(r["same_argmax"]) for r in rows)
            scale = max(r["max_abs_logit"] for r in rows)
            print(
                f"{name} {mode} {path:24} max |dlogit| {worst:.3g} of |logit| {scale:.3g}, "
                f"argmax {same}/{len(rows)}"
            )
        del session
        point.free(torch.device(device))
        args.out.write_text(json.dumps(report, indent=1))  # after every model: a time limit keeps those done


if __name__ == "__main__":
    main()
