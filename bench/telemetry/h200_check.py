"""Telemetry check on an NVIDIA GPU: backends, a power/temperature trace around long prefills, the NVML
energy counter against integrated power, and the sampler's overhead on TTFT.

    python bench/telemetry/h200_check.py --out DIR            # on the GPU machine
    python bench/telemetry/h200_check.py --out DIR --dry-run  # tiny sizes on CPU, checks the script

Workload: Qwen2.5-0.5B built from its public architecture config with random weights (latency and
energy do not depend on weight values), bf16, SDPA attention, last-token logits only; a bf16 matmul
loop for steady and bursty load. Heavy imports stay inside functions: the sampler process is spawned
and re-imports this module.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from ctxscope.agent.phases import PhaseWindow
from ctxscope.agent.telemetry.detect import detect_backends
from ctxscope.agent.telemetry.energy import integrate_j
from ctxscope.agent.telemetry.nvml import NvmlBackend
from ctxscope.agent.telemetry.session import TelemetrySession

# Qwen2.5-0.5B architecture (config.json of Qwen/Qwen2.5-0.5B).
QWEN25_05B = {
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "max_position_embeddings": 131072,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-06,
    "tie_word_embeddings": True,
}


class Workload:
    """A model prefill and a matmul load on one device, timed with synchronize + monotonic clock."""

    def __init__(self, dry_run: bool) -> None:
        import torch

        self.torch = torch
        self.device = "cpu" if dry_run else "cuda"
        self.dtype = torch.float32 if dry_run else torch.bfloat16
        self.model, self.model_desc = self._build_model(dry_run)
        n = 256 if dry_run else 8192
        self.a = torch.randn(n, n, device=self.device, dtype=self.dtype)
        self.b = torch.randn(n, n, device=self.device, dtype=self.dtype)

    def _build_model(self, dry_run: bool) -> tuple[Any, str]:
        from transformers import Qwen2Config, Qwen2ForCausalLM

        arch = dict(QWEN25_05B)
        if dry_run:
            arch.update(
                hidden_size=64,
                intermediate_size=128,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                vocab_size=1000,
            )
        config = Qwen2Config(**arch, attn_implementation="sdpa")
        with self.torch.device(self.device):
            model = Qwen2ForCausalLM(config).to(self.dtype).eval()
        desc = "Qwen2.5-0.5B architecture, random weights, " + (
            "tiny dry-run copy" if dry_run else "bf16, sdpa"
        )
        return model, desc

    def sync(self) -> None:
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def prefill(self, tokens: int) -> float:
        """One prefill with last-token logits; returns seconds (TTFT of a batch-1 request)."""
        torch = self.torch
        ids = torch.randint(0, self.model.config.vocab_size, (1, tokens), device=self.device)
        self.sync()
        start = time.monotonic_ns()
        with torch.inference_mode():
            hidden = self.model.model(input_ids=ids).last_hidden_state
            logits = self.model.lm_head(hidden[:, -1:, :])
            logits.argmax(-1).item()
        self.sync()
        return (time.monotonic_ns() - start) / 1e9

    def matmul_for(self, seconds: float, duty: float = 1.0, period_s: float = 0.2) -> None:
        """Matmuls for `seconds`; with duty < 1, busy for duty*period then idle for the rest."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            busy_until = time.monotonic() + duty * period_s
            while time.monotonic() < busy_until:
                for _ in range(4):
                    self.a @ self.b
                self.sync()
            if duty < 1.0:
                time.sleep((1 - duty) * period_s)


def split(name: str, start_ns: int, seconds: float, count: int) -> list[PhaseWindow]:
    step = int(seconds * 1e9)
    return [PhaseWindow(name, start_ns + i * step, start_ns + (i + 1) * step, tokens=0) for i in range(count)]


def counter_check(session: TelemetrySession, wl: Workload, scale: float) -> dict[str, Any]:
    """Energy counter vs integrated instantaneous (and averaged) power over windows of 1, 2 and 5 s."""
    windows: list[PhaseWindow] = []
    start = time.monotonic_ns()
    wl.matmul_for(13 * scale)
    windows += split("steady_1s", start + int(0.5e9 * scale), 1.0 * scale, 4)
    windows += split("steady_2s", start + int(4.5e9 * scale), 2.0 * scale, 1)
    windows += split("steady_5s", start + int(7e9 * scale), 5.0 * scale, 1)
    start = time.monotonic_ns()
    wl.matmul_for(8 * scale, duty=0.5)
    windows += split("bursty_1s", start + int(0.5e9 * scale), 1.0 * scale, 3)
    windows += split("bursty_2s", start + int(3.5e9 * scale), 2.0 * scale, 2)
    start = time.monotonic_ns()
    time.sleep(7 * scale)
    windows += split("idle_1s", start + int(0.5e9 * scale), 1.0 * scale, 3)
    windows += split("idle_1.5s", start + int(3.5e9 * scale), 1.5 * scale, 2)
    report = session.summarize(windows)
    rows = []
    gpu = next((b for b in session.backends if "energy_j" in b.metrics()), None)
    for phase in dict.fromkeys(w.name for w in windows):
        for record in report.details.get(f"{phase}_windows", []):
            row = {
                "window": phase,
                "seconds": (record["end_ns"] - record["start_ns"]) / 1e9,
                "start_ns": record["start_ns"],
                "end_ns": record["end_ns"],
            }
            for key in ("energy_j", "energy_counter_j", "energy_rel_diff", "power_samples"):
                row[key] = record.get(key)
            if gpu is not None and "power_avg_w" in gpu.metrics():
                chunk = session.ring.window(gpu.name, record["start_ns"], record["end_ns"])
                avg = integrate_j(
                    chunk.t_ns,
                    chunk.channels["power_avg_w"],
                    record["start_ns"],
                    record["end_ns"],
                    int(1.5e9 / session.rate_hz),
                )
                row["energy_from_avg_power_j"] = avg
                counter = record.get("energy_counter_j")
                if avg is not None and counter:
                    row["avg_power_rel_diff"] = (avg - counter) / counter
            rows.append(row)
    return {
        "windows": rows,
        "flags": report.flags,
        "metrics": {k: m.model_dump() for k, m in report.metrics.items()},
    }


def trace(session: TelemetrySession, wl: Workload, tokens: int, repeats: int) -> dict[str, Any]:
    """Idle, then `repeats` long prefills as phase windows, then idle: the sampled trace and summary."""
    t0 = time.monotonic_ns()
    time.sleep(2.0)
    windows = []
    for _ in range(repeats):
        start = time.monotonic_ns()
        wl.prefill(tokens)
        windows.append(PhaseWindow("prefill", start, time.monotonic_ns(), tokens=tokens))
    time.sleep(2.0)
    t1 = time.monotonic_ns()
    report = session.summarize(windows)
    series = {}
    for backend in session.backends:
        chunk = session.ring.window(backend.name, t0, t1)
        if chunk is None:
            continue
        series[backend.name] = {
            "t_s": [round((t - t0) / 1e9, 4) for t in chunk.t_ns.tolist()],
            "channels": {
                k: [None if not np.isfinite(x) else float(x) for x in v] for k, v in chunk.channels.items()
            },
            "units": backend.metrics(),
        }
    return {
        "tokens": tokens,
        "prefill_s": [w.duration_s for w in windows],
        "windows_s": [[(w.start_ns - t0) / 1e9, (w.end_ns - t0) / 1e9] for w in windows],
        "metrics": {k: m.model_dump() for k, m in report.metrics.items()},
        "flags": report.flags,
        "series": series,
    }


def ttft_overhead(
    wl: Workload, backends: list, rate_hz: float, tokens: int, blocks: int, reps: int
) -> dict[str, Any]:
    """TTFT with and without the sampler, in interleaved blocks (off, on, off, on, ...)."""
    for _ in range(3):
        wl.prefill(tokens)
    runs: dict[str, list[float]] = {"off": [], "on": []}
    block_medians: dict[str, list[float]] = {"off": [], "on": []}
    for block in range(blocks):
        mode = "on" if block % 2 else "off"
        session = TelemetrySession(backends, rate_hz=rate_hz) if mode == "on" else None
        if session is not None:
            session.start()
            time.sleep(0.5)
        times = [wl.prefill(tokens) for _ in range(reps)]
        if session is not None:
            session.stop()
        runs[mode] += times
        block_medians[mode].append(statistics.median(times))
    out: dict[str, Any] = {"tokens": tokens, "rate_hz": rate_hz, "blocks": blocks, "reps_per_block": reps}
    for mode, values in runs.items():
        q1, q3 = np.percentile(values, [25, 75])
        out[mode] = {
            "median_s": statistics.median(values),
            "iqr_s": float(q3 - q1),
            "n": len(values),
            "block_medians_s": block_medians[mode],
            "samples_s": values,
        }
    out["overhead_pct"] = 100 * (out["on"]["median_s"] / out["off"]["median_s"] - 1)
    paired = [
        100 * (on / off - 1) for off, on in zip(block_medians["off"], block_medians["on"], strict=False)
    ]
    out["block_pair_overhead_pct"] = paired
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--rate-hz", type=float, default=20.0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    scale = 0.2 if args.dry_run else 1.0
    results: dict[str, Any] = {
        "command": "python bench/telemetry/h200_check.py --out DIR",
        "rate_hz": args.rate_hz,
    }

    backends = detect_backends(args.rate_hz)
    results["backends"] = {
        b.name: {"metrics": b.metrics(), "info": b.info(), "power_method": b.power_method} for b in backends
    }
    print("backends:", {b.name: sorted(b.metrics()) for b in backends}, flush=True)
    if not any(isinstance(b, NvmlBackend) for b in backends):
        probe = NvmlBackend(0)
        probe.available()
        results["nvml_unavailable"] = probe.unavailable_reason
        print("NVML unavailable:", probe.unavailable_reason, flush=True)
    wl = Workload(args.dry_run)
    import torch

    results["software"] = {"torch": torch.__version__, "workload": wl.model_desc}
    if not args.dry_run:
        results["software"]["device"] = torch.cuda.get_device_name()

    with TelemetrySession(backends, rate_hz=args.rate_hz) as session:
        time.sleep(1.0)
        idle = session.idle_power(3.0 * scale)
        results["idle_power"] = idle.model_dump() if idle is not None else None
        print("idle power:", None if idle is None else f"{idle.median:.1f} W (n={idle.n})", flush=True)
        long_tokens = 2048 if args.dry_run else 131072
        wl.prefill(long_tokens)  # warm-up: kernels, allocator
        results["trace"] = trace(session, wl, long_tokens, repeats=3)
        print("prefill s:", results["trace"]["prefill_s"], flush=True)
        checked_from = time.monotonic_ns()
        results["counter_check"] = counter_check(session, wl, scale)
        gpu = next((b for b in backends if "energy_j" in b.metrics()), None)
        if gpu is not None:
            raw = session.ring.window(gpu.name, checked_from, time.monotonic_ns())
            (args.out / "counter_trace.json").write_text(
                json.dumps(
                    {
                        "t_ns": raw.t_ns.tolist(),
                        "channels": {
                            k: [None if not np.isfinite(x) else float(x) for x in v]
                            for k, v in raw.channels.items()
                        },
                        "windows": results["counter_check"]["windows"],
                    }
                )
            )
        results["sampler_errors"] = session.errors

    trace_data = results.pop("trace")
    (args.out / "trace.json").write_text(json.dumps(trace_data))
    results["trace_summary"] = {
        k: trace_data[k] for k in ("tokens", "prefill_s", "windows_s", "metrics", "flags")
    }
    (args.out / "h200_check.json").write_text(json.dumps(results, indent=1))
    results["ttft_overhead"] = []
    for tokens in (256, 1024) if args.dry_run else (4096, 32768):
        reps = 4 if args.dry_run else 8
        results["ttft_overhead"].append(
            ttft_overhead(wl, backends, args.rate_hz, tokens, blocks=8, reps=reps)
        )
        (args.out / "h200_check.json").write_text(json.dumps(results, indent=1))

    print("\n== energy counter vs integrated power ==")
    for row in results["counter_check"]["windows"]:
        rel, avg = row.get("energy_rel_diff"), row.get("avg_power_rel_diff")
        rel_txt = "-" if rel is None else f"{100 * rel:+.2f}%"
        avg_txt = "-" if avg is None else f"{100 * avg:+.2f}%"
        energy, counter = row["energy_j"], row["energy_counter_j"]
        print(f"{row['window']:>10} {row['seconds']:4.1f}s integral {energy} J, counter {counter} J")
        print(f"{'':>10} instant-power rel diff {rel_txt}, 1s-average-power rel diff {avg_txt}")
    print("\n== TTFT overhead of sampling ==")
    for entry in results["ttft_overhead"]:
        off, on = entry["off"], entry["on"]
        print(f"{entry['tokens']:>6} tok: off {1e3 * off['median_s']:.2f} ms (IQR {1e3 * off['iqr_s']:.2f})")
        print(f"{'':>10} on {1e3 * on['median_s']:.2f} ms (IQR {1e3 * on['iqr_s']:.2f})")
        print(f"{'':>10} overhead {entry['overhead_pct']:+.2f}%")
    print("flags:", results["counter_check"]["flags"], results["trace_summary"]["flags"])


if __name__ == "__main__":
    main()
