"""Markdown tables from the committed H200 results (results/engine/), printed to stdout.

    python bench/engine/report.py results/engine /path/to/ssm-scope-paper.json

Tables: the benchmarks, max context side by side with the study's RTX 4090 figures, TTFT and decode
curves (median with p10-p90 of the raw samples), and the crossover lengths between the curves.
Everything printed is read from the result files; what they do not hold is printed as "not run".
"""

from __future__ import annotations

import gzip
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

from ctxscope.collector.aggregate.crossover import crossings

SIX = ("qwen2.5-0.5b", "llama3.2-1b", "mamba-790m", "mamba2-780m", "falcon-h1-0.5b", "zamba2-1.2b")


def read_text(path: Path) -> str:
    """A results file, gzip-compressed where its name ends in .gz (the large JSON-lines files)."""
    return gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()


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
    for names in (("h200-call1/decode_paths.json",), HYBRID_DECODE_FILES):
        rows = _decode_rows(root, names)
        for model, length in sorted({(m, n) for m, n, _ in rows}):
            precision = next(r["precision"] for (m, n, _), r in rows.items() if (m, n) == (model, length))
            cells = {}
            for preference in ("auto", "eager"):
                row = rows.get((model, length, preference), {})
                cells[preference] = (
                    f"`{row['decode_path']}`: {_cell(row['samples_ms'], 3)}"
                    if "samples_ms" in row
                    else "not run (call's time limit)"
                )
            fast, eager = (rows.get((model, length, p), {}).get("samples_ms") for p in ("auto", "eager"))
            ratio = f"{statistics.median(eager) / statistics.median(fast):.1f}x" if fast and eager else "-"
            print(
                f"| {model} decode @ {length} context, {precision}, ms/token "
                f"| {cells['auto']} | {cells['eager']} | {ratio} |"
            )


def _decode_rows(root: Path, names: tuple[str, ...]) -> dict[tuple[str, int, str], dict[str, Any]]:
    """decode_paths.py rows by (model, length, preference), each with its file's precision; a later
    file's row replaces an earlier one (call 10's Zamba2 graph rows ran before the static decoder
    restored its states, call 12's after)."""
    rows: dict[tuple[str, int, str], dict[str, Any]] = {}
    for name in names:
        source = json.loads((root / name).read_text())
        for row in source["rows"]:
            length = row.get("length", source.get("length"))
            rows[(row["model"], length, row["preference"])] = {**row, "precision": source["precision"]}
    return rows


def graph_decode(
    root: Path, curves: dict[str, dict[int, dict[str, Any]]]
) -> dict[str, dict[int, list[float]]]:
    """Decode samples on a graph-captured path, per model and length: the curves' points on such a
    path, and the hybrids' fast-path rows of decode_paths.py."""
    out: dict[str, dict[int, list[float]]] = {}
    for model, points in curves.items():
        for length, point in points.items():
            if "eager" not in point["path"]:
                out.setdefault(model, {})[length] = point["decode"]
    for row in _decode_rows(root, HYBRID_DECODE_FILES).values():
        if row["preference"] == "auto" and "samples_ms" in row and "eager" not in row["decode_path"]:
            out.setdefault(row["model"], {}).setdefault(row["length"], row["samples_ms"])
    return out


SEARCH_FILES = (  # every max-context search run on the H200, oldest first
    "h200-call3/maxctx_study_capped.json",
    "h200-call5/maxctx_capped.json",
    "h200-call6/maxctx_capped_2.json",
    "h200-call6/maxctx_uncapped.json",
    "h200-call8/maxctx_capped_falcon.json",
)
CURVE_FILES = (
    "h200-call2/curves.jsonl",
    "h200-call4/curves-ssm-hybrid.jsonl.gz",
    "h200-call7/curves-zamba2.jsonl.gz",
    "h200-call9/curves-long.jsonl.gz",
    "h200-call10/curves-hybrid-long.jsonl.gz",
    "h200-call10/curves-mamba-long.jsonl.gz",
    "h200-call12/curves-long.jsonl.gz",
    "h200-call13/curves-graph.jsonl.gz",
    "h200-call14/curves-long.jsonl.gz",
)
HYBRID_DECODE_FILES = (  # the hybrids' graph path against eager, oldest first
    "h200-call10/decode_paths_hybrids.json",
    "h200-call12/decode_paths_zamba2.json",
)
TOLERANCE = 0.01
FAIR_FILES = (  # points on the fair path: sdpa-gqa attention, compiled decode step; curves-fair/* too
    "compiled/fair-compiled.jsonl.gz",
)


def _pooled_probes(root: Path) -> dict[tuple[str, str, bool], list[dict[str, Any]]]:
    """Probes of every search, pooled per (model, logits, capped): each probe is an independent child
    process, so a search restarted from an earlier search's interval adds to the same evidence."""
    pooled: dict[tuple[str, str, bool], list[dict[str, Any]]] = {}
    for name in SEARCH_FILES:
        for record in json.loads((root / name).read_text()):
            key = (record["model"], record["logits"], record["memory_cap_bytes"] is not None)
            pooled.setdefault(key, []).extend(
                {**probe, "precision": record["precision"], "bound": record["max_tokens"]}
                for probe in record["probes"]
            )
    return pooled


def _limit_cell(probes: list[dict[str, Any]] | None, open_interval: str = "search cut short") -> str:
    if not probes:
        return "not run"
    fits = [p["context_len"] for p in probes if p["outcome"] == "ok"]
    failing = [p for p in probes if p["outcome"] != "ok"]
    best = max(fits) if fits else None
    first_fail = min(failing, key=lambda p: p["context_len"]) if failing else None
    precision = f" [{probes[0]['precision']}]"
    if first_fail is None:
        return f">= {best} (every probe ran; bounded at {max(p['bound'] for p in probes)}){precision}"
    if best is None:
        return f"< {first_fail['context_len']} ({first_fail['outcome']}){precision}"
    if best > first_fail["context_len"]:
        return f"inconsistent: {best} ran, {first_fail['context_len']} {first_fail['outcome']}{precision}"
    gap = (first_fail["context_len"] - best) / best
    if gap <= TOLERANCE:
        return f"**{best}** (next {first_fail['context_len']}: {first_fail['outcome']}){precision}"
    return (
        f">= {best}, < {first_fail['context_len']} ({first_fail['outcome']}; {100 * gap:.1f}% apart, "
        f"{open_interval}){precision}"
    )


def max_context(root: Path, paper: dict[str, Any]) -> None:
    study = paper["fig5a_rtx4090_max_context_tokens"]
    pooled = _pooled_probes(root)
    print(
        "| model | study, RTX 4090 24 GB (grid, all logits) | (a) study mode on H200, 24 GiB cap "
        "| (b) default mode, 24 GiB cap | (c) default mode, uncapped (139.8 GiB) |"
    )
    print("|---|---|---|---|---|")
    for model in SIX:
        capped_last = pooled.get((model, "last", True), [])
        # what ran under the cap runs without it: the capped successes bound the uncapped limit from below
        uncapped = pooled.get((model, "last", False), []) + [
            {**p, "bound": 0} for p in capped_last if p["outcome"] == "ok"
        ]
        cells = [
            _limit_cell(pooled.get((model, "all", True))),
            _limit_cell(capped_last),
            _limit_cell(
                uncapped if pooled.get((model, "last", False)) else None,
                "one uncapped probe; the lower bound is the capped search's",
            ),
        ]
        print(f"| {model} | {study.get(model, '-')} | " + " | ".join(cells) + " |")


def _curves(root: Path) -> dict[str, dict[int, dict[str, Any]]]:
    """Points of the curves runs, per model and context length."""
    curves: dict[str, dict[int, dict[str, Any]]] = {}
    for source in CURVE_FILES:
        for line in read_text(root / source).splitlines():
            record = json.loads(line)
            if record["kind"] != "result" or record["outcome"] != "ok":
                continue
            metrics = record["metrics"]
            curves.setdefault(record["model"], {})[record["context_len"]] = {
                "ttft": metrics["ttft"]["samples"],
                "decode": metrics["decode_per_token"]["samples"],
                "peak": metrics["memory_peak"]["samples"],
                "path": record["implementation"]["decode_path"],
                "source": source.split("/")[0],
                "energy": {
                    name: metrics[name]["samples"]
                    for name in ("prefill_energy_per_token", "decode_energy_per_token")
                    if name in metrics
                },
                "energy_rel_diff": record["details"].get("observer", {}).get("prefill_energy_rel_diff"),
            }
    return curves


def _paths(points: dict[int, dict[str, Any]]) -> str:
    """Each decode path of a model's curve with the lengths it ran at."""
    by_path: dict[str, list[int]] = {}
    for length, point in sorted(points.items()):
        by_path.setdefault(point["path"], []).append(length)
    return ", ".join(f"`{path}` ({', '.join(f'{n // 1024}K' for n in ns)})" for path, ns in by_path.items())


def curves_tables(root: Path) -> dict[str, dict[int, dict[str, Any]]]:
    curves = _curves(root)
    lengths = sorted({n for points in curves.values() for n in points})
    for metric, title, digits in (("ttft", "TTFT, ms", 1), ("decode", "decode per token, ms", 3)):
        print(f"\n{title} (median (p10-p90, n)):\n")
        print("| model | " + " | ".join(f"{n // 1024}K" for n in lengths) + " |")
        print("|---|" + "---|" * len(lengths))
        for model in SIX:
            points = curves.get(model, {})
            cells = [_cell(points[n][metric], digits) if n in points else "not run" for n in lengths]
            print(f"| {model} | " + " | ".join(cells) + " |")
    print(
        "\nSources: "
        + "; ".join(
            f"{m}: " + ", ".join(sorted({p["source"] for p in points.values()}))
            for m, points in curves.items()
        )
    )
    print("Decode paths: " + "; ".join(f"{m}: {_paths(points)}" for m, points in curves.items()))
    print("\nPeak memory of the prefill, GiB:\n")
    print("| model | " + " | ".join(f"{n // 1024}K" for n in lengths) + " |")
    print("|---|" + "---|" * len(lengths))
    for model in SIX:
        points = curves.get(model, {})
        cells = [f"{points[n]['peak'][0] / 2**30:.2f}" if n in points else "not run" for n in lengths]
        print(f"| {model} | " + " | ".join(cells) + " |")
    return curves


def energy_table(curves: dict[str, dict[int, dict[str, Any]]]) -> None:
    """Energy per token from the telemetry observer (NVML, 20 Hz), where the run had it on."""
    print("\n| model | tokens | prefill mJ/token | decode mJ/token | prefill integral vs counter |")
    print("|---|---|---|---|---|")
    for model in SIX:
        for length, point in sorted(curves.get(model, {}).items()):
            energy = point["energy"]
            if not energy:
                continue
            cells = [
                _cell([1e3 * x for x in energy[name]], 2) if name in energy else "not measured"
                for name in ("prefill_energy_per_token", "decode_energy_per_token")
            ]
            diffs = point["energy_rel_diff"] or []
            spread = ", ".join(f"{100 * d:+.2f}%" for d in diffs) if diffs else "-"
            print(f"| {model} | {length} | {cells[0]} | {cells[1]} | {spread} |")


def crossover_cell(a: dict[int, float], b: dict[int, float]) -> str:
    """Where b becomes faster than a: the collector's crossings (log-log interpolation), formatted."""
    lengths = sorted(set(a) & set(b))
    if len(lengths) < 2:
        return "not run (fewer than two common lengths)"
    found = [c for c in crossings(lengths, [a[n] / b[n] for n in lengths]) if c.faster_above == "other"]
    if found:
        x = found[0].length_tokens
        lo = max(n for n in lengths if n <= x)
        hi = min(n for n in lengths if n >= x)
        return f"~{x / 1024:.0f}K (between {lo // 1024}K and {hi // 1024}K)"
    if all(a[n] > b[n] for n in lengths):
        return f"faster at every measured length ({lengths[0] // 1024}K-{lengths[-1] // 1024}K)"
    if all(a[n] <= b[n] for n in lengths):
        return f"no crossover up to {lengths[-1] // 1024}K"
    return "not monotone"


def crossovers(
    curves: dict[str, dict[int, dict[str, Any]]], graph: dict[str, dict[int, list[float]]]
) -> None:
    """TTFT from the curves; decode from graph-captured paths only (eager decode measures the host)."""
    head = (
        "transformer",
        "SSM / hybrid",
        "TTFT crossover (SSM faster beyond)",
        "decode crossover (graph paths)",
    )
    print("\n| " + " | ".join(head) + " |")
    print("|---|---|---|---|")
    for t in ("qwen2.5-0.5b", "llama3.2-1b"):
        for s in ("mamba-790m", "mamba2-780m", "falcon-h1-0.5b", "zamba2-1.2b"):
            if t not in curves or s not in curves:
                print(f"| {t} | {s} | not run | not run |")
                continue
            ttft_a = {n: statistics.median(v["ttft"]) for n, v in curves[t].items()}
            ttft_b = {n: statistics.median(v["ttft"]) for n, v in curves[s].items()}
            dec_a = {n: statistics.median(v) for n, v in graph.get(t, {}).items()}
            dec_b = {n: statistics.median(v) for n, v in graph.get(s, {}).items()}
            print(f"| {t} | {s} | {crossover_cell(ttft_a, ttft_b)} | {crossover_cell(dec_a, dec_b)} |")


def fair_decode(root: Path) -> dict[str, dict[str, dict[int, list[float]]]]:
    """Decode samples on the fair path per model, decode path and length: the compiled static-cache
    step with sdpa-gqa attention (Transformers, hybrids), and for the SSMs both mamba_ssm's own graph
    and its compiled step (`ssm-compiled/`), of which `fastest_path` keeps one."""
    sources = [root / name for name in FAIR_FILES] + sorted(
        [
            *(root / "curves-fair").glob("curves-*.jsonl.gz"),
            *(root / "ssm-compiled").glob("curves-*.jsonl.gz"),
        ]
    )
    out: dict[str, dict[str, dict[int, list[float]]]] = {}
    for source in sources:
        for line in read_text(source).splitlines():
            record = json.loads(line)
            if record["kind"] != "result" or record["outcome"] != "ok":
                continue
            if "decode_per_token" not in record["metrics"]:
                continue
            path = record["implementation"].get("decode_path", "")
            if path.startswith("compiled") or path.startswith("mamba_ssm"):
                paths = out.setdefault(record["model"], {})
                paths.setdefault(path, {})[record["context_len"]] = record["metrics"]["decode_per_token"][
                    "samples"
                ]
    return out


def fastest_path(paths: dict[str, dict[int, float]]) -> str:
    """Of a model's decode paths, the one with the lower median step over the lengths all measured
    (over each path's own lengths where they share none): what `decode = "auto"` keeps by timing."""
    shared = set.intersection(*(set(points) for points in paths.values()))

    def level(path: str) -> float:
        points = paths[path]
        return statistics.median(points[n] for n in shared) if shared else statistics.median(points.values())

    return min(paths, key=level)


def fair_crossovers(
    graph: dict[str, dict[int, list[float]]], fair: dict[str, dict[str, dict[int, list[float]]]]
) -> None:
    """Decode crossovers before (transformers' attention, uncompiled graph) and after (fair path).
    An SSM is on its faster path: mamba_ssm's own graph (then its earlier points, same path, stand
    beside its new ones) or its compiled step (then only those points); a hybrid's path changed
    (attention and compile), so only its fair points count."""
    medians = {
        model: {path: {n: statistics.median(v) for n, v in points.items()} for path, points in paths.items()}
        for model, paths in fair.items()
    }
    chosen: dict[str, str] = {}
    after: dict[str, dict[int, float]] = {}
    for model, paths in medians.items():
        if model.startswith("mamba"):
            paths.setdefault("mamba_ssm_cuda_graph", {})
            before = {n: statistics.median(v) for n, v in graph.get(model, {}).items()}
            paths["mamba_ssm_cuda_graph"] = {**before, **paths["mamba_ssm_cuda_graph"]}
        chosen[model] = fastest_path(paths)
        after[model] = paths[chosen[model]]
    print("\n| transformer | SSM / hybrid | before | after (fair path) |")
    print("|---|---|---|---|")
    for t in ("qwen2.5-0.5b", "llama3.2-1b"):
        for s in ("mamba-790m", "mamba2-780m", "falcon-h1-0.5b", "zamba2-1.2b"):
            before_a = {n: statistics.median(v) for n, v in graph.get(t, {}).items()}
            before_b = {n: statistics.median(v) for n, v in graph.get(s, {}).items()}
            row = crossover_cell(after.get(t, {}), after.get(s, {}))
            print(f"| {t} | {s} | {crossover_cell(before_a, before_b)} | {row} |")
    print("\nFair-path decode, ms/token (median; of a model's several paths, * marks the one used above):\n")
    for model, paths in sorted(medians.items()):
        for path, points in sorted(paths.items()):
            cells = ", ".join(f"{n // 1024}K {v:.3f}" for n, v in sorted(points.items()))
            mark = " *" if len(paths) > 1 and path == chosen[model] else ""
            print(f"- {model} ({path}{mark}): {cells}")


def main() -> None:
    root, paper_path = Path(sys.argv[1]), Path(sys.argv[2])
    paper = json.loads(paper_path.read_text())
    print("### Benchmarks\n")
    benchmarks(root)
    print("\n### Max context\n")
    max_context(root, paper)
    print("\n### Curves")
    curves = curves_tables(root)
    print("\n### Energy per token")
    energy_table(curves)
    print("\n### Crossover lengths")
    graph = graph_decode(root, curves)
    crossovers(curves, graph)
    print("\n### Decode crossovers on the fair path")
    fair_crossovers(graph, fair_decode(root))


if __name__ == "__main__":
    main()
