"""Operator shares and roofline of prefill on the lent H200, for the study's models, 1K to 128K tokens.

Each model runs in a child process (a CUDA fault poisons only its own context) through
`ctxscope.agent.profiling.cli.profile_run`; records go to OUT/records.jsonl as they are made. Each
child also records its kernel names (name, module label, count, device time) at one length for the
classifier's test fixtures, and the first child keeps a trimmed Chrome trace of one pass. Children
run one after another until `--budget-s` is spent (a running child is stopped at that point).

    python bench/profiling/h200_operator_shares.py --out "$OUT"
    python bench/profiling/h200_operator_shares.py --out /tmp/dry --lengths 64 --dry-run   # CPU check
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

MODELS = ("mamba-130m", "mamba2-130m", "qwen2.5-0.5b", "falcon-h1-0.5b", "zamba2-1.2b")
LENGTHS = (1024, 4096, 16384, 32768, 65536, 131072)
DECODE_LENGTHS = (1024, 16384)
FIXTURE_LENGTHS = (4096, 64)  # the H200 run's, and the dry run's
HOST_CATEGORIES = frozenset({"cuda_runtime", "cuda_driver", "user_annotation"})
DEVICE_CATEGORIES = frozenset({"kernel", "gpu_memcpy", "gpu_memset"})
MODULE_PREFIX = "ctxscope::module::"


def child(
    model: str, hf: bool, out: Path, lengths: tuple[int, ...], keep_trace: bool, dry_run: bool, decode: bool
) -> None:
    from ctxscope.agent.engine.loop import LoopPolicy
    from ctxscope.agent.profiling.cli import profile_run
    from ctxscope.agent.profiling.run import ProfileSettings
    from ctxscope.agent.records import JsonLinesSink

    policy = LoopPolicy(warmups=0, min_reps=3, max_reps=5, min_time_s=0.0, max_time_s=1.5)
    prefill = ProfileSettings(
        lengths=lengths, iterations=2, timed_policy=policy, trace_dir=out / "traces" if keep_trace else None
    )
    decode_settings = ProfileSettings(
        lengths=lengths[:1] if dry_run else DECODE_LENGTHS,
        phases=("decode",),
        iterations=2,
        timed_policy=policy,
    )
    variant = f"{model}{'-hf' if hf else ''}"
    points = []
    with (out / "records.jsonl").open("a") as stream:
        for settings in (prefill, decode_settings) if decode else (prefill,):
            points += profile_run(
                JsonLinesSink(stream, "h200"),
                model=model,
                precision="fp32" if dry_run else "bf16",
                device="cpu" if dry_run else "cuda",
                settings=settings,
                tiny=dry_run,
                prefer_native=not hf,
            )
    for point in points:
        if point.context_len in FIXTURE_LENGTHS and "prefill" in point.phases:
            events = point.phases["prefill"].profile.passes[0].events
            fixture = {"model": variant, "context_len": point.context_len, "phase": "prefill"}
            fixture["kernels"] = _kernel_rows(events)
            (out / f"kernels_{variant}.json").write_text(json.dumps(fixture, indent=0))
    if keep_trace:
        _trim_traces(out / "traces", out / f"trace_{variant}_1pass.json")


def _kernel_rows(events: Any) -> list[dict[str, Any]]:
    """Kernel name, module label, count and device time of one pass, as recorded (no class: the
    tests classify the names themselves)."""
    rows: dict[tuple[str, str], list[int]] = {}
    for event in events:
        label = next((s.split("::")[-1] for s in reversed(event.scopes) if s.startswith(MODULE_PREFIX)), "")
        row = rows.setdefault((event.name, label), [0, 0])
        row[0] += 1
        row[1] += event.dur_ns
    return [
        {"name": name, "module": label, "count": count, "time_ns": time_ns}
        for (name, label), (count, time_ns) in sorted(rows.items(), key=lambda kv: -kv[1][1])
    ]


def _trim_traces(folder: Path, target: Path) -> None:
    """Keeps the first pass of the smallest trace: its kernels, copies and memsets, the runtime and
    driver calls that launched them (and syncs), and the ctxscope host ranges; CPU ops are dropped."""
    smallest = min(folder.glob("*.json"), key=lambda p: p.stat().st_size)
    events = json.loads(smallest.read_text())["traceEvents"]
    first = next(e for e in events if e.get("cat") == "user_annotation" and e["name"].endswith("#0"))
    start, end = first["ts"], first["ts"] + first["dur"]
    host = [
        e
        for e in events
        if e.get("cat") in HOST_CATEGORIES and e.get("ph") == "X" and start <= e["ts"] <= end
    ]
    launched = {(e.get("args") or {}).get("correlation") for e in host}
    device = [
        e for e in events if e.get("cat") in DEVICE_CATEGORIES and e["args"].get("correlation") in launched
    ]
    used = {e["args"]["correlation"] for e in device}
    host = [
        e
        for e in host
        if e["cat"] == "user_annotation" or e["args"].get("correlation") in used or "Synchronize" in e["name"]
    ]
    kept = [
        {**{k: e[k] for k in ("ph", "cat", "name", "pid", "tid", "ts", "dur")}, "args": _args(e)}
        for e in host + device
    ]
    target.write_text(json.dumps({"traceEvents": kept, "source": smallest.name}, separators=(",", ":")))
    for path in folder.glob("*.json"):
        path.unlink()


def _args(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in (event.get("args") or {}).items() if k in ("correlation", "stream")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--lengths", default=",".join(map(str, LENGTHS)))
    parser.add_argument(
        "--budget-s", type=float, default=330.0, help="start no child after this many seconds"
    )
    parser.add_argument(
        "--hf-mamba2", action="store_true", help="also Mamba2-130m through transformers + kernels"
    )
    parser.add_argument("--child", default=None)
    parser.add_argument("--hf", action="store_true")
    parser.add_argument("--keep-trace", action="store_true")
    parser.add_argument("--dry-run", action="store_true", help="tiny models on the CPU, to check the script")
    parser.add_argument("--decode", action="store_true", help=f"also one decode step at {DECODE_LENGTHS}")
    args = parser.parse_args()
    lengths = tuple(int(v) for v in args.lengths.split(","))
    args.out.mkdir(parents=True, exist_ok=True)
    if args.child:
        child(args.child, args.hf, args.out, lengths, args.keep_trace, args.dry_run, args.decode)
        return 0
    runs = [(m, False) for m in args.models.split(",")] + ([("mamba2-130m", True)] if args.hf_mamba2 else [])
    started = time.monotonic()
    log = (args.out / "bench.log").open("a")
    for i, (model, hf) in enumerate(runs):
        left = args.budget_s - (time.monotonic() - started)
        if left < 20:
            print(f"skipped {model}{' (hf)' if hf else ''}: budget spent", flush=True)
            continue
        command = [
            sys.executable,
            __file__,
            "--child",
            model,
            "--out",
            str(args.out),
            "--lengths",
            args.lengths,
        ]
        command += ["--hf"] if hf else []
        command += ["--keep-trace"] if i == 0 else []
        command += ["--dry-run"] if args.dry_run else []
        command += ["--decode"] if args.decode else []
        t0 = time.monotonic()
        rc: int | str
        try:
            rc = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, timeout=left).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
        print(f"{model}{' (hf)' if hf else ''}: rc={rc} in {time.monotonic() - t0:.1f} s", flush=True)
    _merge_kernel_lists(args.out)
    _summary(args.out)
    return 0


def _merge_kernel_lists(out: Path) -> None:
    """One file for all models (at most 8 files come back from the device)."""
    parts = sorted(out.glob("kernels_*.json"))
    merged = [json.loads(p.read_text()) for p in parts]
    (out / "kernels.json").write_text(json.dumps({"recorded": merged}, indent=0))
    for part in parts:
        part.unlink()
    traces = out / "traces"
    if traces.is_dir() and not any(traces.iterdir()):
        traces.rmdir()


def _summary(out: Path) -> None:
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines() if line.strip()]
    lines = []
    for r in records:
        if r.get("kind") != "result":
            continue
        label = f"{r['model']} ({r['implementation'].get('runtime')})"
        if r["outcome"] != "ok":
            lines.append(f"{label:30} {r['context_len']:>7} {r['outcome']} {str(r.get('error'))[:80]}")
            continue
        for phase, ops in r["details"]["operators"].items():
            latency = r["metrics"][f"profile_{phase}_latency"]["samples"]
            roof = r["details"]["roofline"][phase].get("over_latency", {})
            top = " ".join(f"{c}={v['share_pct']:.1f}" for c, v in list(ops["classes"].items())[:5])
            lines.append(
                f"{label:30} {phase:7} {r['context_len']:>7} lat={statistics.median(latency):.2f}ms "
                f"peak%={100 * roof.get('fraction_of_peak_flops', float('nan')):.1f} {top}"
            )
        failed = r["details"].get("failed_phases")
        if failed:
            lines.append(f"{label:30} FAILED {failed}"[:200])
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
