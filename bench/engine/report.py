"""Markdown tables from the committed H200 results (results/engine/), printed to stdout.

    python bench/engine/report.py results/engine /path/to/ssm-scope-paper.json

Tables: the benchmarks, max context side by side with the study's RTX 4090 figures, TTFT and decode
curves (median with p10-p90 of the raw samples), and the crossover lengths between the curves.
Everything printed is read from the result files; what they do not hold is printed as "not run".
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

SIX = ("qwen2.5-0.5b", "llama3.2-1b", "mamba-790m", "mamba2-780m", "falcon-h1-0.5b", "zamba2-1.2b")


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    k = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def _cell(samples: list[float], digits: int = 1) -> str:
    med = statistics.median(samples)
    return (
        f"{med:.{digits}f} ({_pct(samples, 10):.{digits}f}-{_pct(samples, 90):.{digits}f}, n={len(samples)})"
    )


def benchmarks(root: Path) -> None:
    prefill = json.loads((root / "h200-call1/prefill_vs_native.json").read_text())
    decode = json.loads((root / "h200-call1/decode_paths.json").read_text())
    print("| benchmark | through the agent | reference in the same run | ratio |")
    print("|---|---|---|---|")
    agent = prefill["agent_ttft_ms"]["samples_ms"]
    native = prefill["native_direct_ms"]["samples_ms"]
    state = prefill["native_direct_with_state_ms"]["samples_ms"]
    hf = prefill["hf_kernels_ttft_ms"]["samples_ms"]
    ratio = statistics.median(agent) / statistics.median(native)
    print(
        f"| {prefill['model']} prefill @ {prefill['length']} tokens, {prefill['precision']}, ms "
        f"| {_cell(agent)} "
        f"| native `model(ids, num_last_tokens=1)`: {_cell(native)}; with InferenceParams: {_cell(state)} "
        f"| {ratio:.3f} |"
    )
    print(
        f"| same, transformers Mamba2 + mamba_ssm kernels, ms | {_cell(hf)} | native direct {_cell(native)} "
        f"| {statistics.median(hf) / statistics.median(native):.2f} |"
    )
    rows = {(r["model"], r["preference"]): r for r in decode["rows"]}
    for model in sorted({m for m, _ in rows}):
        fast, eager = rows[(model, "auto")], rows[(model, "eager")]
        print(
            f"| {model} decode @ {decode['length']} context, {decode['precision']}, ms/token "
            f"| `{fast['decode_path']}`: {_cell(fast['samples_ms'], 3)} "
            f"| `{eager['decode_path']}`: {_cell(eager['samples_ms'], 3)} "
            f"| {statistics.median(eager['samples_ms']) / statistics.median(fast['samples_ms']):.1f}x |"
        )


def _search_cell(record: dict[str, Any]) -> str:
    if record.get("complete"):
        search = record["search"]
        if search["largest_ok"] is None:
            return f"nothing fits ({search['failing_outcome']})"
        return f"**{search['largest_ok']}** (next {search['smallest_failing']}: {search['failing_outcome']})"
    probes = record["probes"]
    ok = [p["context_len"] for p in probes if p["outcome"] == "ok"]
    bad = [p for p in probes if p["outcome"] != "ok"]
    best = max(ok) if ok else None
    failing = min(bad, key=lambda p: p["context_len"]) if bad else None
    text = f">= {best}" if best else "no probe ran"
    if failing:
        text += f", < {failing['context_len']} ({failing['outcome']})"
    return text + " - search cut short by the device budget"


def max_context(root: Path, paper: dict[str, Any]) -> None:
    study = paper["fig5a_rtx4090_max_context_tokens"]
    records = {r["model"]: r for r in json.loads((root / "h200-call3/maxctx_study_capped.json").read_text())}
    print(
        "| model | study, RTX 4090 24 GB (grid, all logits) | (a) study mode on H200, 24 GiB cap "
        "| (b) default mode, 24 GiB cap | (c) uncapped |"
    )
    print("|---|---|---|---|---|")
    for model in SIX:
        record = records.get(model)
        cell = _search_cell(record) if record else "not run (device budget)"
        precision = f" [{record['precision']}]" if record else ""
        print(f"| {model} | {study.get(model, '-')} | {cell}{precision} | not run | not run |")


def _curves(root: Path) -> dict[str, dict[int, dict[str, Any]]]:
    """Points of the curves run; points the curves run lacks are taken from the smoke run (marked)."""
    curves: dict[str, dict[int, dict[str, Any]]] = {}
    for source, mark in (("h200-call2/curves.jsonl", ""), ("h200-call1/smoke.jsonl", " †")):
        for line in (root / source).read_text().splitlines():
            record = json.loads(line)
            if record["kind"] != "result" or record["outcome"] != "ok":
                continue
            points = curves.setdefault(record["model"], {})
            if record["context_len"] in points:
                continue
            metrics = record["metrics"]
            points[record["context_len"]] = {
                "ttft": metrics["ttft"]["samples"],
                "decode": metrics["decode_per_token"]["samples"],
                "peak": metrics["memory_peak"]["samples"],
                "path": record["implementation"]["decode_path"],
                "mark": mark,
            }
    return curves


def curves_tables(root: Path) -> dict[str, dict[int, dict[str, Any]]]:
    curves = _curves(root)
    lengths = sorted({n for points in curves.values() for n in points})
    for metric, title, digits in (("ttft", "TTFT, ms", 1), ("decode", "decode per token, ms", 3)):
        print(f"\n{title} (median (p10-p90, n)):\n")
        print("| model | " + " | ".join(f"{n // 1024}K" for n in lengths) + " |")
        print("|---|" + "---|" * len(lengths))
        for model in SIX:
            points = curves.get(model)
            if not points:
                print(f"| {model} | " + " | ".join("not run" for _ in lengths) + " |")
                continue
            cells = [
                _cell(points[n][metric], digits) + points[n]["mark"] if n in points else "not run"
                for n in lengths
            ]
            print(f"| {model} | " + " | ".join(cells) + " |")
    print("\n† from the smoke run (call 1, plan h200-smoke.toml); the other cells from the curves run.")
    print("Decode paths: " + "; ".join(f"{m}: `{next(iter(p.values()))['path']}`" for m, p in curves.items()))
    print("\nPeak memory of the prefill, GiB:\n")
    print("| model | " + " | ".join(f"{n // 1024}K" for n in lengths) + " |")
    print("|---|" + "---|" * len(lengths))
    for model in SIX:
        points = curves.get(model, {})
        cells = [
            f"{points[n]['peak'][0] / 2**30:.2f}{points[n]['mark']}" if n in points else "not run"
            for n in lengths
        ]
        print(f"| {model} | " + " | ".join(cells) + " |")
    return curves


def _crossover(a: dict[int, float], b: dict[int, float]) -> str:
    """Where b becomes faster than a, interpolated in log-log between the bracketing lengths."""
    lengths = sorted(set(a) & set(b))
    if len(lengths) < 2:
        return "not run (fewer than two common lengths)"
    for lo, hi in itertools.pairwise(lengths):
        d_lo, d_hi = math.log(a[lo] / b[lo]), math.log(a[hi] / b[hi])
        if d_lo < 0 <= d_hi:
            t = -d_lo / (d_hi - d_lo)
            x = math.exp(math.log(lo) + t * (math.log(hi) - math.log(lo)))
            return f"~{x / 1024:.0f}K (between {lo // 1024}K and {hi // 1024}K)"
    if lengths and all(a[n] > b[n] for n in lengths):
        return f"faster at every measured length ({lengths[0] // 1024}K-{lengths[-1] // 1024}K)"
    if lengths and all(a[n] <= b[n] for n in lengths):
        return f"no crossover up to {lengths[-1] // 1024}K"
    return "not monotone"


def crossovers(curves: dict[str, dict[int, dict[str, Any]]]) -> None:
    print("\n| transformer | SSM / hybrid | TTFT crossover (SSM faster beyond) | decode crossover |")
    print("|---|---|---|---|")
    for t in ("qwen2.5-0.5b", "llama3.2-1b"):
        for s in ("mamba-790m", "mamba2-780m", "falcon-h1-0.5b", "zamba2-1.2b"):
            if t not in curves or s not in curves:
                print(f"| {t} | {s} | not run | not run |")
                continue
            cells = []
            for metric in ("ttft", "decode"):
                a = {n: statistics.median(v[metric]) for n, v in curves[t].items()}
                b = {n: statistics.median(v[metric]) for n, v in curves[s].items()}
                cells.append(_crossover(a, b))
            print(f"| {t} | {s} | {cells[0]} | {cells[1]} |")


def main() -> None:
    root, paper_path = Path(sys.argv[1]), Path(sys.argv[2])
    paper = json.loads(paper_path.read_text())
    print("### Benchmarks\n")
    benchmarks(root)
    print("\n### Max context\n")
    max_context(root, paper)
    print("\n### Curves")
    curves = curves_tables(root)
    print("\n### Crossover lengths")
    crossovers(curves)


if __name__ == "__main__":
    main()
