"""Evaluate the predictor against measured figures it was not built from.

Source: the H200's profiled points (results/profiling). Targets: the reference study's Jetson Orin
Nano forward times and RTX 4090 TTFTs (results/prediction/ssm_scope_reference.json), the H200's own
engine TTFTs (results/engine), and an H100's engine TTFTs and decode times (results/prediction/h100),
predicted twice: from both cards' committed calibrations, and from both cards' peak-table entries.
Each other target's rates come from its calibration records when given, else from its peak-table
entry (assumed). Nothing here feeds back into the predictor's constants.

    python bench/prediction/evaluate.py [--source-calibration h200_calibration.jsonl]
        [--target-calibration KEY=FILE ...] [--json OUT.json]

prints the per-point table and the summary (markdown).
"""

from __future__ import annotations

import argparse
import functools
import gzip
import json
import statistics
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctxscope.collector.predict.inputs import (
    DeviceRates,
    SourcePoint,
    rates_from_calibration,
    rates_from_peaks,
    source_points,
)
from ctxscope.collector.predict.model import (
    OutsideMeasuredRange,
    Prediction,
    all_logits_ms,
    at_length,
    predict_curve,
)

ROOT = Path(__file__).resolve().parents[2]
PROFILES = ("results/profiling/h200_records.jsonl.gz", "results/profiling/h200_records_session3.jsonl.gz")
ENGINE = ("results/engine/h200-call2/curves.jsonl", "results/engine/h200-call4/curves-ssm-hybrid.jsonl.gz")
H100_ENGINE = ("results/prediction/h100/curves.jsonl.gz", "results/prediction/h100/curves-hybrids.jsonl.gz")
H100_CALIBRATION = "results/prediction/h100/calibration.jsonl"
H200_CALIBRATION = "results/calibration/calibration.jsonl"
REFERENCE = "results/prediction/ssm_scope_reference.json"


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def model_dims(model: str) -> tuple[int, int]:
    config = json.loads((ROOT / "agent/zoo/configs" / f"{model}.json").read_text())
    hidden = int(config.get("hidden_size") or config["d_model"])
    vocab = int(config["vocab_size"])
    multiple = int(config.get("pad_vocab_size_multiple") or 1)
    return hidden, -(-vocab // multiple) * multiple


def rates(key: str, calibrations: dict[str, Path]) -> DeviceRates:
    if key in calibrations:
        return rates_from_calibration(read_jsonl(calibrations[key]), fallback=key)
    return rates_from_peaks(key)


def measured_sets(reference: dict[str, Any]) -> list[tuple[str, str, str, dict[str, dict[str, float]], str]]:
    """(set name, peak key, phase, {model: {length: ms}}, logits) for each evaluation set."""
    prof = reference["forward_time_ms_under_profiler"]
    return [
        (
            "Jetson Orin Nano: forward under profiler",
            "jetson-orin-nano-8gb",
            "prefill",
            prof["jetson_orin_nano"],
            "all",
        ),
        ("RTX 4090: forward under profiler", "rtx-4090", "prefill", prof["rtx4090"], "all"),
        ("RTX 4090: TTFT (Fig. 6b)", "rtx-4090", "prefill", reference["fig6b_rtx4090_ttft_ms"], "all"),
        ("RTX 4090: TPOT (Fig. 1)", "rtx-4090", "decode", _ms(reference["fig1_rtx4090"]["tpot_s"]), "last"),
    ]


def _ms(seconds: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    return {model: {n: 1e3 * v for n, v in lengths.items()} for model, lengths in seconds.items()}


@functools.cache
def engine_results(files: tuple[str, ...]) -> tuple[dict[str, Any], ...]:
    """The result records of the engine files, read once."""
    return tuple(r for name in files for r in read_jsonl(ROOT / name) if r.get("kind") == "result")


def engine_medians(metric: str, files: tuple[str, ...] = ENGINE) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for r in engine_results(files):
        if r.get("outcome") == "ok" and metric in r.get("metrics", {}):
            out.setdefault(r["model"], {})[str(r["context_len"])] = statistics.median(
                r["metrics"][metric]["samples"]
            )
    return out


def graphed_models(files: tuple[str, ...] = ENGINE) -> frozenset[str]:
    """The models whose measured decode replayed its step as a CUDA graph (the record's decode path)."""
    return frozenset(
        r["model"]
        for r in engine_results(files)
        if "graph" in str(r.get("implementation", {}).get("decode_path"))
    )


def curves(
    points: list[SourcePoint],
    source: DeviceRates,
    target: DeviceRates,
    phase: str,
    graphed: frozenset[str] = frozenset(),
) -> dict[str, list[Prediction]]:
    """The phase's curve per model (the native runtime where a model has two); a model in `graphed`
    is predicted as replayed from a CUDA graph (no host term)."""
    by_model: dict[str, list[SourcePoint]] = {}
    for p in points:
        if p.phase == phase:
            by_model.setdefault(f"{p.model}|{p.runtime}", []).append(p)
    out: dict[str, list[Prediction]] = {}
    for key in sorted(by_model):
        model, runtime = key.split("|")
        if model in out and runtime != "mamba_ssm":
            continue
        out[model] = predict_curve(by_model[key], source, target, graph_replayed=model in graphed)
    return out


@dataclass(frozen=True)
class EvaluationSet:
    name: str
    source: DeviceRates
    target: DeviceRates
    phase: str
    measured: dict[str, dict[str, float]]  # {model: {length: ms}}
    logits: str
    graphed: frozenset[str] = frozenset()  # models whose measured decode step was a CUDA graph replay


def evaluation_sets(args: argparse.Namespace, source: DeviceRates) -> list[EvaluationSet]:
    calib_paths = {k: Path(v) for k, v in (item.split("=", 1) for item in args.target_calibration)}
    reference = json.loads((ROOT / REFERENCE).read_text())
    sets = [
        EvaluationSet(name, source, rates(key, calib_paths), phase, measured, logits)
        for name, key, phase, measured, logits in measured_sets(reference)
    ]
    sets += [
        EvaluationSet("H200 (self): engine TTFT", source, source, "prefill", engine_medians("ttft"), "last"),
        EvaluationSet(
            "H200 (self): engine decode per token",
            source,
            source,
            "decode",
            engine_medians("decode_per_token"),
            "last",
            graphed_models(),
        ),
    ]
    calibrated = (
        rates_from_calibration(read_jsonl(ROOT / H200_CALIBRATION), fallback="h200-sxm"),
        rates_from_calibration(read_jsonl(ROOT / H100_CALIBRATION), fallback="h100-sxm"),
    )
    stated = (rates_from_peaks("h200-sxm"), rates_from_peaks("h100-sxm"))
    h100_sets = (
        ("prefill", "TTFT", engine_medians("ttft", H100_ENGINE), frozenset[str]()),
        ("decode", "decode", engine_medians("decode_per_token", H100_ENGINE), graphed_models(H100_ENGINE)),
    )
    for label, (h200, h100) in (("both calibrated", calibrated), ("peak table", stated)):
        for phase, what, measured, graphed in h100_sets:
            sets.append(
                EvaluationSet(f"H100: engine {what}, {label}", h200, h100, phase, measured, "last", graphed)
            )
    return sets


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    calib_paths = {"h200-sxm": args.source_calibration} if args.source_calibration else {}
    points = [p for name in PROFILES for p in source_points(read_jsonl(ROOT / name))]
    source = rates("h200-sxm", calib_paths)
    rows: list[dict[str, Any]] = []
    for s in evaluation_sets(args, source):
        model_curves = curves(points, s.source, s.target, s.phase, s.graphed)
        for model, lengths in s.measured.items():
            for length_s, value in lengths.items():
                row: dict[str, Any] = {
                    "set": s.name,
                    "model": model,
                    "length": int(length_s),
                    "measured_ms": value,
                }
                row["calibrated"] = s.target.calibrated and s.source.calibrated
                if model not in model_curves:
                    row["status"] = "no source profile"
                    rows.append(row)
                    continue
                try:
                    p = at_length(model_curves[model], int(length_s))
                except OutsideMeasuredRange as exc:
                    row["status"] = f"not predicted: {exc}"
                    rows.append(row)
                    continue
                delta = (
                    all_logits_ms(int(length_s), *model_dims(model), s.target) if s.logits == "all" else 0.0
                )
                scale = (p.latency_ms + delta) / p.latency_ms
                row.update(
                    predicted_ms=p.latency_ms + delta,
                    low_ms=p.low_ms * scale,
                    high_ms=None if p.high_ms is None else p.high_ms * scale,
                    logits_delta_ms=delta,
                    lower_bound=p.lower_bound,
                    host_bound=p.host_bound,
                    interpolated=p.interpolated,
                    graph_replayed=model in s.graphed,
                    status="lower bound"
                    if p.lower_bound
                    else ("host-bound" if p.host_bound else "device-bound"),
                )
                row["error"] = row["predicted_ms"] / value - 1
                row["in_band"] = value >= row["low_ms"] and (
                    row["high_ms"] is None or value <= row["high_ms"]
                )
                rows.append(row)
    return {"source": describe(source), "rows": rows, "summary": summarise(rows)}


def describe(r: DeviceRates) -> dict[str, Any]:
    return {
        "device": r.device,
        "rates": {k: {"value": v.value, "unit": v.unit, "status": v.status} for k, v in r.rates.items()},
        "launch_floor_ms": r.launch_floor_ms,
        "host_per_op_ms": r.host_per_op_ms,
    }


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for set_name in dict.fromkeys(r["set"] for r in rows):
        mine = [r for r in rows if r["set"] == set_name]
        predicted = [r for r in mine if "predicted_ms" in r]
        central = [r for r in predicted if not r["lower_bound"]]
        device_bound = [r for r in predicted if r["status"] == "device-bound"]
        errors = [abs(r["error"]) for r in central]
        out.append(
            {
                "set": set_name,
                "points": len(mine),
                "predicted": len(predicted),
                "lower_bounds": len(predicted) - len(central),
                "median_abs_error": statistics.median(errors) if errors else None,
                "within_30": sum(e <= 0.3 for e in errors),
                "device_bound_within_30": sum(abs(r["error"]) <= 0.3 for r in device_bound),
                "device_bound": len(device_bound),
                "in_band": sum(r["in_band"] for r in predicted),
                "calibrated": any(r["calibrated"] for r in mine),
            }
        )
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "| set | target rates | points | predicted | lower bounds only | median abs error (central) "
        "| within +-30% | device-bound within +-30% | measured inside band |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in result["summary"]:
        med = "-" if s["median_abs_error"] is None else f"{100 * s['median_abs_error']:.0f}%"
        central = s["predicted"] - s["lower_bounds"]
        lines.append(
            f"| {s['set']} | {'calibrated' if s['calibrated'] else 'assumed (peak table)'} | {s['points']} "
            f"| {s['predicted']} | {s['lower_bounds']} | {med} | {s['within_30']} of {central} "
            f"| {s['device_bound_within_30']} of {s['device_bound']} | {s['in_band']} of {s['predicted']} |"
        )
    lines += [
        "",
        "| set | model | tokens | measured ms | predicted ms | band ms | error | status |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        if "predicted_ms" not in r:
            lines.append(
                f"| {r['set']} | {r['model']} | {r['length']} | {r['measured_ms']:.4g} | - | - | - "
                f"| {r['status']} |"
            )
            continue
        high = "open" if r["high_ms"] is None else f"{r['high_ms']:.4g}"
        marks = ("interpolated" if r["interpolated"] else "", "CUDA graph" if r["graph_replayed"] else "")
        lines.append(
            f"| {r['set']} | {r['model']} | {r['length']} | {r['measured_ms']:.4g} | {r['predicted_ms']:.4g} "
            f"| {r['low_ms']:.4g}..{high} | {100 * r['error']:+.0f}% | {r['status']}"
            f"{''.join(f', {m}' for m in marks if m)} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source-calibration", type=Path, help="H200 calibration JSON lines (agent calibrate)"
    )
    parser.add_argument(
        "--target-calibration", action="append", default=[], help="PEAKS_KEY=FILE: a target's calibration"
    )
    parser.add_argument("--json", type=Path, help="also write rows and summary here")
    args = parser.parse_args()
    result = evaluate(args)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    print(markdown(result))


if __name__ == "__main__":
    main()
