"""Benchmark: decode time per token at one context on every decode path the engine has.

For each model, the engine's fastest path (`decode = "auto"`: CUDA graph over a static cache, or
mamba_ssm's graph cache) against the eager path, each after one prefill, per token, same run.

    python bench/engine/decode_paths.py --models qwen2.5-0.5b,mamba2-780m --length 4096 --out decode.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ctxscope.agent.engine import point
from ctxscope.agent.engine.loop import LoopPolicy
from ctxscope.agent.engine.manifest import collect


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="qwen2.5-0.5b")
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--decode-tokens", type=int, default=64)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    policy = LoopPolicy(warmups=2, min_reps=5, max_reps=30, min_time_s=0.5, max_time_s=20.0)
    rows = []
    for name in args.models.split(","):
        session = point.Session(point.ModelChoice(name, args.precision, "cuda"))
        for preference in ("auto", "eager"):
            settings = point.PointSettings(
                context_len=args.length, decode_tokens=args.decode_tokens, decode=preference, policy=policy
            )
            outcome, _ = point.measure_point(session, settings)
            metric = outcome.metrics["decode_per_token"]
            rows.append(
                {
                    "model": name,
                    "preference": preference,
                    "decode_path": outcome.implementation["decode_path"],
                    "median_ms": metric.median,
                    "p10_ms": metric.percentile(10),
                    "p90_ms": metric.percentile(90),
                    "samples_ms": metric.samples,
                    "method": metric.method,
                    "implementation": outcome.implementation,
                    "note": outcome.details.get("decode_note"),
                }
            )
            path = outcome.implementation["decode_path"]
            print(f"{name} @ {args.length}: {path}: {metric.median:.3f} ms/token")
        del session
        point.free(torch.device("cuda"))
    report = {"length": args.length, "precision": args.precision, "rows": rows, "manifest": collect("cuda")}
    args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
