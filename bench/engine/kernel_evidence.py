"""Checks, on a GPU, that each model's kernel-path record agrees with a profiler trace of the same forward.

For every model: load it through the zoo (the record comes from the loader's call-evidence probe), then
trace one prefill and one decode step with torch.profiler and look for the kernel packages' own device
kernels. An operation recorded as a kernel must show that kernel in the trace; one recorded as the torch
fallback must show none of it. Writes one JSON object with the records, the kernel names seen per
family and a verdict per operation; exits 1 when any operation disagrees.

    python3 bench/engine/kernel_evidence.py --models mamba2-780m,falcon-h1-0.5b --length 4096 --out FILE
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import torch

from ctxscope.agent import zoo
from ctxscope.agent.engine import decoding, forward
from ctxscope.agent.zoo.kernels import kernel_availability

# device-kernel names of the kernel packages (never launched by the torch fallback)
FAMILIES = {
    "ssd": re.compile(
        r"_chunk_scan_fwd|_chunk_state_fwd|_state_passing_fwd|_bmm_chunk_fwd|_chunk_cumsum_fwd"
    ),
    "selective_scan_cuda": re.compile(r"selective_scan_fwd"),
    "causal_conv1d_fwd": re.compile(r"causal_conv1d_fwd|causal_conv1d_channellast_fwd"),
    "causal_conv1d_update": re.compile(r"causal_conv1d_update"),
    "selective_state_update": re.compile(r"_selective_scan_update_kernel"),
}
# operation -> (the phase that runs it, (a word of its record's label, the device-kernel family it means))
EXPECTED = {
    "ssm_scan": ("prefill", (("SSD", "ssd"), ("selective_scan_cuda", "selective_scan_cuda"))),
    "conv1d": ("prefill", (("causal_conv1d", "causal_conv1d_fwd"),)),
    "ssm_step": (
        "step",
        (
            ("selective_state_update", "selective_state_update"),
            ("causal_conv1d_update", "causal_conv1d_update"),
        ),
    ),
}


def _kernels(run: Any) -> list[str]:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        run()
        torch.cuda.synchronize()
    return sorted({e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA})


def _families(names: list[str]) -> dict[str, list[str]]:
    return {family: [n for n in names if rx.search(n)] for family, rx in FAMILIES.items()}


def _recorded(label: str, word: str) -> bool:
    """Whether a record's label names the kernel `word` (a part such as "torch X fallback" does not)."""
    return any(word in part and not part.startswith("torch ") for part in label.split(" + "))


def _verdicts(implementation: dict[str, str], seen: dict[str, dict[str, list[str]]]) -> dict[str, str]:
    verdicts: dict[str, str] = {}
    for op, (phase, pairs) in EXPECTED.items():
        label = implementation.get(op, "")
        present = {family for family, names in seen[phase].items() if names}
        wrong = [(word, family) for word, family in pairs if _recorded(label, word) != (family in present)]
        verdicts[op] = "agrees" if not wrong else f"DISAGREES on {wrong}: trace families {sorted(present)}"
    return verdicts


def check(name: str, length: int, prefer_native: bool) -> dict[str, Any]:
    loaded = zoo.load_model(name, device="cuda", dtype=torch.bfloat16, prefer_native=prefer_native)
    vocab = int(loaded.spec.config["vocab_size"])
    ids = decoding.synthetic_prompt(vocab, length, seed=0, device=torch.device("cuda"))
    with torch.inference_mode():
        forward.prefill(loaded.runtime, loaded.module, ids, "last")  # compile and autotune outside the trace
        prefill_names = _kernels(lambda: forward.prefill(loaded.runtime, loaded.module, ids, "last"))
        decoder = forward.make_decoder(loaded.runtime, loaded.module, ids, 4, "eager")
        decoder.step()
        step_names = _kernels(decoder.step)
    seen = {"prefill": _families(prefill_names), "step": _families(step_names)}
    result = {
        "model": name,
        "runtime": loaded.runtime,
        "length": length,
        "implementation": loaded.implementation,
        "trace_families": seen,
        "verdicts": _verdicts(loaded.implementation, seen),
    }
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mamba2-780m,falcon-h1-0.5b")
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument(
        "--also-transformers-runtime",
        action="store_true",
        help="check pure SSMs on transformers + kernels as well as on native mamba_ssm",
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    runs = []
    for name in args.models.split(","):
        runs.append(check(name, args.length, prefer_native=True))
        if args.also_transformers_runtime and zoo.get_spec(name).model_type in ("mamba", "mamba2"):
            runs.append(check(name, args.length, prefer_native=False))
    report = {"packages": kernel_availability(), "runs": runs}
    args.out.write_text(json.dumps(report, indent=1))
    bad = 0
    for run in runs:
        for op, verdict in run["verdicts"].items():
            label = run["implementation"].get(op)
            print(f"{run['model']:<16} {run['runtime']:<13} {op:<9} {verdict}  [{label}]")
            bad += verdict != "agrees"
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
