"""Markdown tables from profiling records: operator shares beside the study's, and prefill roofline.

    python bench/profiling/shares_table.py results/profiling/h200_records.jsonl.gz \
        --reference ../shared/reference/ssm-scope-paper.json > table.md
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
from pathlib import Path
from typing import Any

CLASSES = (
    "ssm_scan",
    "conv1d",
    "attention",
    "gemm",
    "lm_head",
    "norm",
    "elementwise",
    "rotary",
    "memcpy_memset",
    "other",
)


def _results(path: Path) -> list[dict[str, Any]]:
    text = gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [r for r in rows if r.get("kind") == "result"]


def _label(r: dict[str, Any]) -> str:
    runtime = r["implementation"].get("runtime", "?")
    return f"{r['model']} ({'native mamba_ssm' if runtime == 'mamba_ssm' else 'HF'})"


def _study(reference: dict[str, Any], figure: str, model: str, length: int) -> str:
    value = reference.get(figure, {}).get(model, {}).get(str(length))
    return "-" if value is None else f"{value:.1f}"


def shares_table(results: list[dict[str, Any]], reference: dict[str, Any], phase: str) -> str:
    head = [
        "model",
        "tokens",
        *CLASSES,
        "scan+conv1d+gemm",
        "study fig7 4090 scan",
        "study fig9a Jetson scan",
        "device ms/pass",
        "idle ms/pass",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        ops = r["details"].get("operators", {}).get(phase)
        if r["outcome"] != "ok" or ops is None:
            if phase == "prefill" and r["outcome"] != "ok":
                lines.append(
                    f"| {_label(r)} | {r['context_len']} | {r['outcome']}: {str(r.get('error'))[:60]} |"
                )
            continue
        classes = ops["classes"]
        idle = [h["device_idle_ms"] for h in ops["host"] if h["device_idle_ms"] is not None]
        cells = [_label(r), str(r["context_len"])]
        cells += [f"{classes[c]['share_pct']:.1f}" if c in classes else "0" for c in CLASSES]
        # what the study's fused "SSM_Scan" function held: scan, conv1d and the block's projections
        fused = sum(classes[c]["share_pct"] for c in ("ssm_scan", "conv1d", "gemm") if c in classes)
        cells += [
            f"{fused:.1f}" if "ssm_scan" in classes else "-",
            _study(reference, "fig7_rtx4090_ssm_scan_share_pct", r["model"], r["context_len"]),
            _study(reference, "fig9a_jetson_ssm_scan_share_pct", r["model"], r["context_len"]),
            f"{ops['total_ms'] / ops['passes']:.3f}",
            f"{statistics.median(idle):.3f}" if idle else "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def roofline_table(results: list[dict[str, Any]], phase: str) -> str:
    head = [
        "model",
        "tokens",
        "latency ms (median, n)",
        "TFLOP (analytic)",
        "GB (analytic)",
        "TFLOP/s",
        "% peak FLOP/s",
        "GB/s",
        "% peak BW",
        "limiting roof at this intensity",
        "% peak FLOP/s over kernel busy time",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        roof = r["details"].get("roofline", {}).get(phase)
        if (
            r["outcome"] != "ok"
            or roof is None
            or "fraction_of_peak_flops" not in roof.get("over_latency", {})
        ):
            continue
        lat, busy = roof["over_latency"], roof.get("over_device_busy", {})
        samples = r["metrics"][f"profile_{phase}_latency"]["samples"]
        cells = [
            _label(r),
            str(r["context_len"]),
            f"{statistics.median(samples):.3f} (n={len(samples)})",
            f"{lat['flops'] / 1e12:.3f}",
            f"{lat['bytes'] / 1e9:.2f}",
            f"{lat['achieved_tflops']:.1f}",
            f"{100 * lat['fraction_of_peak_flops']:.1f}",
            f"{lat['achieved_gb_s']:.0f}",
            f"{100 * lat['fraction_of_peak_bandwidth']:.1f}",
            lat["bound"],
            f"{100 * busy['fraction_of_peak_flops']:.1f}" if "fraction_of_peak_flops" in busy else "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def class_table(results: list[dict[str, Any]], phase: str) -> str:
    """Achieved rates per operator class over its kernel time: % of peak FLOP/s / % of peak bandwidth."""
    head = ["model", "tokens", "ssm_scan", "conv1d", "gemm", "attention"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        by_class = r["details"].get("roofline", {}).get(phase, {}).get("by_class")
        if r["outcome"] != "ok" or not by_class:
            continue
        cells = [_label(r), str(r["context_len"])]
        for cls in head[2:]:
            row = by_class.get(cls)
            cells.append(
                f"{100 * row['fraction_of_peak_flops']:.1f} / {100 * row['fraction_of_peak_bandwidth']:.1f}"
                if row and "fraction_of_peak_flops" in row
                else "-"
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("records", type=Path)
    parser.add_argument("--reference", type=Path, required=True, help="the study's ssm-scope-paper.json")
    parser.add_argument("--phase", default="prefill")
    args = parser.parse_args()
    results = sorted(_results(args.records), key=lambda r: (_label(r), r["context_len"]))
    reference = json.loads(args.reference.read_text())
    print(f"### Operator shares of device time, {args.phase} (%)\n")
    print(shares_table(results, reference, args.phase))
    print(f"\n### Roofline, {args.phase}\n")
    print(roofline_table(results, args.phase))
    print(f"\n### Per class over its kernel time, {args.phase}: % of peak FLOP/s / % of peak bandwidth\n")
    print(class_table(results, args.phase))


if __name__ == "__main__":
    main()
