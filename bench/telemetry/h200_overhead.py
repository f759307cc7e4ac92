"""Follow-up to h200_check.py: where the sampler's TTFT overhead on short prefills comes from, and how
the energy integral tracks the NVML counter under bursty load at 20, 50 and 100 Hz.

    python bench/telemetry/h200_overhead.py --out DIR            # on the GPU machine
    python bench/telemetry/h200_overhead.py --out DIR --dry-run  # tiny sizes on CPU

TTFT at 4096 tokens (Qwen2.5-0.5B architecture, random weights, bf16) in blocks ordered
A B C D D C B A ... so that drift cancels: off; NVML power+energy only at 20 Hz; every NVML metric
plus the host at 20 Hz; every metric at 100 Hz. The sampler process's CPU time is read per block.

The blocks showed that a 4K prefill switches between latency states that last a dozen prefills or
more, which blocks cannot separate from the sampler's effect. `--paired` therefore alternates
sampling on and off at every prefill, in one sampler process that is paused (SIGSTOP) and resumed
(SIGCONT) in between, and reports the per-pair relative differences: a state that lasts longer than a
pair cancels out of every difference.

    python bench/telemetry/h200_overhead.py --out DIR --paired   # only the paired comparison
    python bench/telemetry/h200_overhead.py --out DIR --summary DIR/h200_overhead_paired.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from h200_check import Workload, split

from ctxscope.agent.telemetry.base import Backend
from ctxscope.agent.telemetry.host import HostBackend
from ctxscope.agent.telemetry.nvml import NvmlBackend
from ctxscope.agent.telemetry.session import TelemetrySession

MODES = ("off", "power_20hz", "full_20hz", "full_100hz")


def mode_backends(mode: str, dry_run: bool) -> tuple[list[Backend], float]:
    if dry_run:  # no GPU: the host backend exercises the same session path
        host = HostBackend()
        host.available()
        return [host], 100.0 if mode == "full_100hz" else 20.0
    if mode == "power_20hz":
        gpu = NvmlBackend(0, only={"power_w", "energy_j"})
        gpu.available()
        return [gpu], 20.0
    gpu = NvmlBackend(0)
    gpu.available()
    host = HostBackend()
    host.available()
    return [gpu, host], 100.0 if mode == "full_100hz" else 20.0


def sampler_cpu_pct(mode: str, dry_run: bool, seconds: float) -> float:
    """CPU time of the sampler process over `seconds` of sampling, in % of one core."""
    backends, rate = mode_backends(mode, dry_run)
    with TelemetrySession(backends, rate_hz=rate) as session:
        proc = psutil.Process(session.sampler_pid)
        before, start = sum(proc.cpu_times()[:2]), time.monotonic()
        time.sleep(seconds)
        return 100 * (sum(proc.cpu_times()[:2]) - before) / (time.monotonic() - start)


def overhead(wl: Workload, tokens: int, rounds: int, reps: int, dry_run: bool) -> dict[str, Any]:
    for _ in range(3):
        wl.prefill(tokens)
    order = [m for r in range(rounds) for m in (MODES if r % 2 == 0 else MODES[::-1])]
    runs: dict[str, list[float]] = {m: [] for m in MODES}
    blocks: dict[str, list[float]] = {m: [] for m in MODES}
    cpu: dict[str, list[float]] = {m: [] for m in MODES}
    rates: dict[str, list[float]] = {m: [] for m in MODES}
    for mode in order:
        session = None
        if mode != "off":
            backends, rate = mode_backends(mode, dry_run)
            session = TelemetrySession(backends, rate_hz=rate).start()
            time.sleep(0.3)
            proc = psutil.Process(session.sampler_pid)
            cpu_before, wall_before = sum(proc.cpu_times()[:2]), time.monotonic()
        times = [wl.prefill(tokens) for _ in range(reps)]
        if session is not None:
            cpu[mode].append(
                100 * (sum(proc.cpu_times()[:2]) - cpu_before) / (time.monotonic() - wall_before)
            )
            chunk = session.ring.get(session.backends[0].name)
            session.stop()
            if chunk is not None and len(chunk) > 1:
                rates[mode].append((len(chunk) - 1) / ((chunk.t_ns[-1] - chunk.t_ns[0]) / 1e9))
        runs[mode] += times
        blocks[mode].append(statistics.median(times))
    for mode in MODES[1:]:
        cpu[mode].append(sampler_cpu_pct(mode, dry_run, seconds=0.5 if dry_run else 3.0))
    out: dict[str, Any] = {"tokens": tokens, "order": order, "reps_per_block": reps}
    base = statistics.median(runs["off"])
    for mode in MODES:
        q1, q3 = np.percentile(runs[mode], [25, 75])
        out[mode] = {
            "median_s": statistics.median(runs[mode]),
            "iqr_s": float(q3 - q1),
            "n": len(runs[mode]),
            "overhead_pct": 100 * (statistics.median(runs[mode]) / base - 1),
            "block_medians_s": blocks[mode],
            "sampler_cpu_pct_of_one_core": cpu[mode],
            "achieved_rate_hz": rates[mode],
            "samples_s": runs[mode],
        }
    return out


def paired_overhead(wl: Workload, tokens: int, pairs: int, mode: str, dry_run: bool) -> dict[str, Any]:
    """TTFT with the sampler running vs paused, alternating every prefill (on-off, off-on, ...)."""
    for _ in range(3):
        wl.prefill(tokens)
    backends, rate = mode_backends(mode, dry_run)
    on: list[float] = []
    off: list[float] = []
    diffs: list[float] = []
    with TelemetrySession(backends, rate_hz=rate) as session:
        pid = session.sampler_pid
        assert pid is not None
        time.sleep(0.5)
        try:
            for i in range(pairs):
                timed: dict[bool, float] = {}
                for sampling in (True, False) if i % 2 == 0 else (False, True):
                    os.kill(pid, signal.SIGCONT if sampling else signal.SIGSTOP)
                    timed[sampling] = wl.prefill(tokens)
                on.append(timed[True])
                off.append(timed[False])
                diffs.append(timed[True] / timed[False] - 1)
        finally:
            os.kill(pid, signal.SIGCONT)
    q1, q3 = np.percentile(diffs, [25, 75])
    sem = statistics.stdev(diffs) / len(diffs) ** 0.5
    return {
        "tokens": tokens,
        "mode": mode,
        "rate_hz": rate,
        "pairs": pairs,
        "method": "per pair: TTFT with the sampler running / TTFT with it paused (SIGSTOP) - 1; "
        "order alternates on-off, off-on",
        "median_rel_diff": statistics.median(diffs),
        "iqr_rel_diff": [float(q1), float(q3)],
        "mean_rel_diff": statistics.fmean(diffs),
        "mean_rel_diff_95ci": [statistics.fmean(diffs) - 1.96 * sem, statistics.fmean(diffs) + 1.96 * sem],
        "median_on_s": statistics.median(on),
        "median_off_s": statistics.median(off),
        "rel_diffs": diffs,
        "on_s": on,
        "off_s": off,
    }


def bursty_energy(wl: Workload, rate_hz: float, scale: float) -> list[dict[str, Any]]:
    gpu = NvmlBackend(0)
    if not gpu.available():
        return []
    with TelemetrySession([gpu], rate_hz=rate_hz) as session:
        time.sleep(0.5)
        start = time.monotonic_ns()
        wl.matmul_for(6.5 * scale, duty=0.5)
        report = session.summarize(split("bursty_1s", start + int(0.5e9 * scale), 1.0 * scale, 5))
    return [
        {k: r.get(k) for k in ("energy_j", "energy_counter_j", "energy_rel_diff", "power_samples")}
        for r in report.details.get("bursty_1s_windows", [])
    ]


def median_bootstrap_ci(diffs: list[float], resamples: int = 2000) -> tuple[float, float]:
    """95% bootstrap interval of the median (resampling with replacement, seed 0)."""
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(diffs, k=len(diffs))) for _ in range(resamples))
    return medians[int(0.025 * resamples)], medians[int(0.975 * resamples)]


def print_paired(results: dict[str, Any]) -> None:
    for mode, entry in results["paired"].items():
        lo, hi = entry["mean_rel_diff_95ci"]
        mlo, mhi = median_bootstrap_ci(entry["rel_diffs"])
        print(
            f"{mode:>11}: {entry['pairs']} pairs, median {100 * entry['median_rel_diff']:+.2f}% "
            f"(bootstrap 95% CI {100 * mlo:+.2f}..{100 * mhi:+.2f}%; "
            f"IQR {100 * entry['iqr_rel_diff'][0]:+.2f}..{100 * entry['iqr_rel_diff'][1]:+.2f}%), "
            f"mean {100 * entry['mean_rel_diff']:+.2f}% (95% CI {100 * lo:+.2f}..{100 * hi:+.2f}%)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--paired", action="store_true", help="only the per-prefill paired comparison")
    parser.add_argument("--pairs", type=int, default=200, help="pairs per sampling mode with --paired")
    parser.add_argument("--summary", type=Path, help="print the summary of a saved paired JSON and exit")
    args = parser.parse_args()
    if args.summary:
        print_paired(json.loads(args.summary.read_text()))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    scale = 0.2 if args.dry_run else 1.0
    wl = Workload(args.dry_run)
    tokens = 256 if args.dry_run else 4096
    if args.paired:
        pairs = 20 if args.dry_run else args.pairs
        results: dict[str, Any] = {
            "command": f"python bench/telemetry/h200_overhead.py --out DIR --paired --pairs {pairs}"
        }
        results["paired"] = {
            mode: paired_overhead(wl, tokens, pairs, mode, args.dry_run) for mode in MODES if mode != "off"
        }
        (args.out / "h200_overhead_paired.json").write_text(json.dumps(results, indent=1))
        print_paired(results)
        return
    results = {"command": "python bench/telemetry/h200_overhead.py --out DIR"}
    results["bursty_energy"] = {str(rate): bursty_energy(wl, rate, scale) for rate in (20.0, 50.0, 100.0)}
    (args.out / "h200_overhead.json").write_text(json.dumps(results, indent=1))
    results["ttft"] = overhead(wl, tokens, rounds=4, reps=3 if args.dry_run else 12, dry_run=args.dry_run)
    (args.out / "h200_overhead.json").write_text(json.dumps(results, indent=1))

    for rate, rows in results["bursty_energy"].items():
        diffs = [f"{100 * r['energy_rel_diff']:+.2f}%" for r in rows if r.get("energy_rel_diff") is not None]
        print(f"bursty 1 s windows at {rate} Hz: integral vs counter {diffs}")
    ttft = results["ttft"]
    for mode in MODES:
        entry = ttft[mode]
        cpu = entry["sampler_cpu_pct_of_one_core"]
        cpu_txt = f"{np.median(cpu):.1f}%" if cpu else "-"
        print(
            f"{mode:>11}: median {1e3 * entry['median_s']:.3f} ms IQR {1e3 * entry['iqr_s']:.3f} "
            f"overhead {entry['overhead_pct']:+.2f}% sampler CPU {cpu_txt}"
        )


if __name__ == "__main__":
    main()
