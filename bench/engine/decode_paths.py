"""Benchmark: decode time per token at given contexts on every decode path the engine has.

For each model, the engine's fastest path (`decode = "auto"`: CUDA graph over a static cache, or
mamba_ssm's graph cache) against the eager path, each after one prefill, per token, same run. For
transformers models, the two paths are also checked against each other at the first length: both
decode from the same prompt, the eager one fed the fast one's tokens, and the logits of every step
are compared.

    python bench/engine/decode_paths.py --models qwen2.5-0.5b,mamba2-780m --lengths 4096 --out decode.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from ctxscope.agent.engine import decoding, forward, point
from ctxscope.agent.engine.loop import LoopPolicy
from ctxscope.agent.engine.manifest import collect


def agreement(session: point.Session, length: int, steps: int) -> dict[str, Any]:
    """Logits of the fast and the eager decode path, step by step, on one token sequence."""
    ids = decoding.synthetic_prompt(session.vocab_size, length, seed=0, device=session.device)
    with torch.inference_mode():
        fast: Any = forward.make_decoder(session.runtime, session.module, ids, steps, "auto")
        eager: Any = forward.make_decoder(session.runtime, session.module, ids, steps, "eager")
        rows = []
        for _ in range(steps):
            eager.token = fast.token.clone()
            fast.step()
            eager.step()
            a, b = fast.last_logits.float(), eager.last_logits.float()
            rows.append(
                {
                    "max_abs_diff": float((a - b).abs().max()),
                    "max_abs_logit": float(b.abs().max()),
                    "same_argmax": bool(torch.equal(fast.token.view(-1), eager.token.view(-1))),
                }
            )
    paths = [fast.path, eager.path]
    del fast, eager
    point.free(session.device)
    return {"length": length, "paths": paths, "steps": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="qwen2.5-0.5b")
    parser.add_argument("--lengths", default="4096", help="comma-separated context lengths")
    parser.add_argument("--check-steps", type=int, default=16, help="steps of the fast-vs-eager logits check")
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--decode-tokens", type=int, default=64)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dry-run", action="store_true", help="tiny models on the CPU, to check the script")
    args = parser.parse_args()
    device = "cpu" if args.dry_run else "cuda"
    lengths = [int(v) for v in args.lengths.split(",")]
    policy = LoopPolicy(warmups=2, min_reps=5, max_reps=30, min_time_s=0.5, max_time_s=20.0)
    rows: list[dict[str, Any]] = []
    checks: dict[str, Any] = {}
    for name in args.models.split(","):
        session = point.Session(point.ModelChoice(name, args.precision, device, tiny=args.dry_run))
        if session.runtime != "mamba_ssm":
            check = agreement(session, lengths[0], args.check_steps)
            checks[name] = check
            worst = max(row["max_abs_diff"] for row in check["steps"])
            same = sum(row["same_argmax"] for row in check["steps"])
            steps = len(check["steps"])
            print(
                f"{name} @ {lengths[0]}: fast vs eager: max |dlogit| {worst:.4g}, same token {same}/{steps}"
            )
        for length in lengths:
            for preference in ("auto", "eager"):
                settings = point.PointSettings(
                    context_len=length, decode_tokens=args.decode_tokens, decode=preference, policy=policy
                )
                outcome = point.measure_point(session, settings)  # raises when the point fails
                metric = outcome.metrics["decode_per_token"]
                rows.append(
                    {
                        "model": name,
                        "length": length,
                        "preference": preference,
                        "outcome": "ok",
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
                print(f"{name} @ {length}: {path}: {metric.median:.3f} ms/token", flush=True)
                report = {
                    "command": "python bench/engine/decode_paths.py " + " ".join(sys.argv[1:]),
                    "precision": args.precision,
                    "rows": rows,
                    "fast_vs_eager_logits": checks,
                    "manifest": collect(device),
                }
                args.out.write_text(json.dumps(report, indent=1))
        del session
        point.free(torch.device(device))


if __name__ == "__main__":
    main()
