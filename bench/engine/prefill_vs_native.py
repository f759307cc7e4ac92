"""Benchmark: prefill through the agent against the model's library called directly, same run.

The agent's TTFT is a prefill that also keeps the cache or recurrent state (what decoding needs next).
Direct calls, on the same loaded module:
- native mamba_ssm models: `MambaLMHeadModel(ids, num_last_tokens=1)` without and with an
  InferenceParams (`native_direct_ms`, `native_direct_with_state_ms`); optionally (`--hf`) the
  transformers Mamba2 model with the mamba_ssm kernels, for the DESIGN.md comparison;
- transformers models: `model(input_ids=ids, use_cache=True, logits_to_keep=1)` on the agent's
  attention (`hf_direct_ms`), the same without a cache (`hf_direct_no_cache_ms`), and with cache on
  transformers' default SDPA attention (`hf_transformers_sdpa_ms`).
All are timed by the same loop (CUDA events, warm-ups, repetitions to a stable median).

    python bench/engine/prefill_vs_native.py --length 262144 --out prefill_vs_native.json
    python bench/engine/prefill_vs_native.py --model qwen2.5-0.5b --length 65536 --out qwen.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from ctxscope.agent.engine import decoding, point
from ctxscope.agent.engine.loop import LoopPolicy, LoopResult, Timer, measure
from ctxscope.agent.engine.manifest import collect


def _summary(result: LoopResult) -> dict[str, object]:
    samples = [s / 1e6 for s in result.samples_ns]
    return {"median_ms": result.median_ns / 1e6, "samples_ms": samples, "stop_reason": result.stop_reason}


def _native_direct(
    module: torch.nn.Module, ids: torch.Tensor, timer: Timer, policy: LoopPolicy
) -> tuple[LoopResult, LoopResult]:
    from mamba_ssm.utils.generation import InferenceParams

    length = ids.shape[1]
    with torch.inference_mode():
        direct = measure(
            lambda: module(ids, num_last_tokens=1),
            name="prefill",
            tokens_per_run=length,
            timer=timer,
            policy=policy,
        )
        with_state = measure(
            lambda: module(
                ids,
                inference_params=InferenceParams(max_seqlen=length + 1, max_batch_size=1),
                num_last_tokens=1,
            ),
            name="prefill",
            tokens_per_run=length,
            timer=timer,
            policy=policy,
        )
    return direct, with_state


def _hf_direct(module: Any, ids: torch.Tensor, timer: Timer, policy: LoopPolicy) -> dict[str, LoopResult]:
    def call(use_cache: bool) -> LoopResult:
        return measure(
            lambda: module(input_ids=ids, use_cache=use_cache, logits_to_keep=1),
            name="prefill",
            tokens_per_run=ids.shape[1],
            timer=timer,
            policy=policy,
        )

    chosen = module.config._attn_implementation
    with torch.inference_mode():
        results = {"hf_direct_ms": call(True), "hf_direct_no_cache_ms": call(False)}
        module.set_attn_implementation("sdpa")
        try:
            results["hf_transformers_sdpa_ms"] = call(True)
        finally:
            module.set_attn_implementation(chosen)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="mamba2-780m")
    parser.add_argument("--length", type=int, default=262_144)
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--hf", action="store_true", help="also time the transformers model with kernels")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dry-run", action="store_true", help="a tiny model on the CPU, to check the script")
    args = parser.parse_args()
    policy = LoopPolicy(warmups=2, min_reps=5, max_reps=20, min_time_s=1.0, max_time_s=40.0)
    device = torch.device("cpu" if args.dry_run else "cuda")
    timer = Timer(device)
    report: dict[str, object] = {"model": args.model, "length": args.length, "precision": args.precision}

    session = point.Session(point.ModelChoice(args.model, args.precision, device.type, tiny=args.dry_run))
    report["implementation"] = session.implementation()
    settings = point.PointSettings(context_len=args.length, decode_tokens=0, policy=policy)
    agent = point.measure_point(session, settings)
    report["agent_ttft_ms"] = {
        "median_ms": agent.metrics["ttft"].median,
        "samples_ms": agent.metrics["ttft"].samples,
    }
    if "memory_peak" in agent.metrics:  # measured on a GPU only
        report["agent_memory_peak_bytes"] = agent.metrics["memory_peak"].median

    ids = decoding.synthetic_prompt(session.vocab_size, args.length, seed=0, device=device)
    if session.runtime == "mamba_ssm":
        direct, with_state = _native_direct(session.module, ids, timer, policy)
        calls = {"native_direct_ms": direct, "native_direct_with_state_ms": with_state}
    else:
        calls = _hf_direct(session.module, ids, timer, policy)
    report.update({label: _summary(result) for label, result in calls.items()})
    del session
    point.free(device)

    if args.hf:
        hf = point.Session(
            point.ModelChoice(args.model, args.precision, device.type, tiny=args.dry_run, prefer_native=False)
        )
        hf_outcome = point.measure_point(hf, settings)
        report["hf_kernels_ttft_ms"] = {
            "median_ms": hf_outcome.metrics["ttft"].median,
            "samples_ms": hf_outcome.metrics["ttft"].samples,
            "implementation": hf.implementation(),
        }
        if "memory_peak" in hf_outcome.metrics:
            report["hf_memory_peak_bytes"] = hf_outcome.metrics["memory_peak"].median

    report["manifest"] = collect(device.type, precision=args.precision)
    args.out.write_text(json.dumps(report, indent=1))
    agent_ms = agent.metrics["ttft"].median
    medians = {label.removesuffix("_ms"): result.median_ns / 1e6 for label, result in calls.items()}
    ratios = ", ".join(f"{label} {ms:.1f} ms (agent/it {agent_ms / ms:.3f})" for label, ms in medians.items())
    print(f"{args.model} prefill @ {args.length}: agent {agent_ms:.1f} ms; {ratios}")


if __name__ == "__main__":
    main()
