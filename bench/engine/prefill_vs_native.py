"""Benchmark: Mamba-2 prefill through the agent against native mamba_ssm called directly, same run.

The agent's TTFT is a prefill that also keeps the recurrent state (what decoding needs next); the
direct calls are `MambaLMHeadModel(ids, num_last_tokens=1)` without and with an InferenceParams.
Optionally the transformers Mamba2 model with the mamba_ssm kernels, for the DESIGN.md comparison.
All are timed by the same loop (CUDA events, warm-ups, repetitions to a stable median).

    python bench/engine/prefill_vs_native.py --length 262144 --out prefill_vs_native.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ctxscope.agent.engine import forward, point
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="mamba2-780m")
    parser.add_argument("--length", type=int, default=262_144)
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--hf", action="store_true", help="also time the transformers model with kernels")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    policy = LoopPolicy(warmups=2, min_reps=5, max_reps=20, min_time_s=1.0, max_time_s=40.0)
    device = torch.device("cuda")
    timer = Timer(device)
    report: dict[str, object] = {"model": args.model, "length": args.length, "precision": args.precision}

    session = point.Session(point.ModelChoice(args.model, args.precision, "cuda"))
    report["implementation"] = session.implementation()
    settings = point.PointSettings(context_len=args.length, decode_tokens=0, policy=policy)
    agent = point.measure_point(session, settings)
    report["agent_ttft_ms"] = {
        "median_ms": agent.metrics["ttft"].median,
        "samples_ms": agent.metrics["ttft"].samples,
    }
    report["agent_memory_peak_bytes"] = agent.metrics["memory_peak"].median

    ids = forward.synthetic_prompt(session.vocab_size, args.length, seed=0, device=device)
    direct, with_state = _native_direct(session.module, ids, timer, policy)
    report["native_direct_ms"] = _summary(direct)
    report["native_direct_with_state_ms"] = _summary(with_state)
    del session
    point.free(device)

    if args.hf:
        hf = point.Session(point.ModelChoice(args.model, args.precision, "cuda", prefer_native=False))
        hf_outcome = point.measure_point(hf, settings)
        report["hf_kernels_ttft_ms"] = {
            "median_ms": hf_outcome.metrics["ttft"].median,
            "samples_ms": hf_outcome.metrics["ttft"].samples,
            "implementation": hf.implementation(),
        }
        report["hf_memory_peak_bytes"] = hf_outcome.metrics["memory_peak"].median

    report["manifest"] = collect("cuda", precision=args.precision)
    args.out.write_text(json.dumps(report, indent=1))
    agent_ms = agent.metrics["ttft"].median
    direct_ms, state_ms = direct.median_ns / 1e6, with_state.median_ns / 1e6
    print(
        f"{args.model} prefill @ {args.length}: agent {agent_ms:.1f} ms, native direct {direct_ms:.1f} ms, "
        f"native+state {state_ms:.1f} ms, agent/native = {agent_ms / direct_ms:.3f}"
    )


if __name__ == "__main__":
    main()
