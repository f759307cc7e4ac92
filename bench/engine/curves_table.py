"""One device's curves as Markdown: every point of the `ctxscope agent run` records in a folder, and the
decode crossovers between its Transformers and its SSMs and hybrids, each model on the decode path its
records name (the engine's choice on that device).

    python bench/engine/curves_table.py results/engine/curves-now/h100

Reads `*.jsonl`, `*.jsonl.gz` and `*.tgz` (archives of them, as the device calls return them) in the
folder. Cells: the median of a metric's samples; decode with its interquartile range; `x floor` is the
step against its HBM-bound floor (bytes each token must read over the measured bandwidth); `PDL`
whether the compiled step launched its kernels dependently (`implementation.decode_dependent_launch`).
A point that did not complete is listed with its outcome.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from report import crossover_cell, read_text

TRANSFORMERS = ("qwen2.5-0.5b", "llama3.2-1b")


def records(folder: Path) -> Iterator[dict[str, Any]]:
    """Every record of the folder's record files and archives."""
    for path in sorted(folder.iterdir()):
        if path.name.endswith((".jsonl", ".jsonl.gz")):
            lines = read_text(path).splitlines()
        elif path.name.endswith(".tgz"):
            with tarfile.open(path) as archive:
                lines = [
                    line
                    for member in archive.getmembers()
                    if member.name.endswith(".jsonl") and (data := archive.extractfile(member)) is not None
                    for line in data.read().decode().splitlines()
                ]
        else:
            continue
        yield from (json.loads(line) for line in lines if line.strip())


def points(folder: Path) -> list[dict[str, Any]]:
    """The point results (not profiles), ordered by model and context length."""
    found = [
        r
        for r in records(folder)
        if r.get("kind") == "result" and r.get("details", {}).get("kind") != "profile"
    ]
    return sorted(found, key=lambda r: (r.get("model", ""), r.get("context_len", 0)))


def median(record: dict[str, Any], metric: str) -> float | None:
    samples = record.get("metrics", {}).get(metric, {}).get("samples")
    return statistics.median(samples) if samples else None


def _iqr(samples: list[float]) -> float:
    if len(samples) < 2:
        return 0.0
    q = statistics.quantiles(samples, n=4, method="inclusive")
    return q[2] - q[0]


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def point_rows(found: list[dict[str, Any]]) -> list[str]:
    rows = [
        "| model | context | TTFT, ms | decode, ms/token (IQR) | bytes per token | floor, ms | x floor "
        "| decode energy per token, board / above idle | decode path | PDL | SSM step | revision |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in found:
        model, length = r.get("model", "?"), r.get("context_len", 0)
        if r.get("outcome") != "ok":
            error = str(r.get("error") or "")[:80]
            rows.append(f"| {model} | {length // 1024}K | {r.get('outcome')}: {error} |" + " |" * 9)
            continue
        decode, floor = median(r, "decode_per_token"), median(r, "decode_floor")
        samples = r["metrics"].get("decode_per_token", {}).get("samples", [])
        read = median(r, "decode_bytes_per_token")
        board, above = median(r, "decode_energy_per_token"), median(r, "decode_energy_above_idle_per_token")
        impl = r.get("implementation", {})
        ratio = decode / floor if decode is not None and floor else None
        rows.append(
            f"| {model} | {length // 1024}K | {_number(median(r, 'ttft'), 1)} "
            f"| {_number(decode, 3)} ({_number(_iqr(samples) if samples else None, 4)}) "
            f"| {_number(read / 1e9 if read else None, 2)} GB | {_number(floor, 3)} | {_number(ratio, 2)} "
            f"| {_number(board, 3)} / {_number(above, 3)} J | {impl.get('decode_path', '-')} "
            f"| {_dependent_launch(impl)} | {impl.get('ssm_step', '-')} "
            f"| {r.get('manifest', {}).get('git_revision', '-')} |"
        )
    return rows


def _dependent_launch(implementation: dict[str, Any]) -> str:
    """Whether the step launched dependently: on, off, or "-" where the record predates the key or the
    step was not compiled."""
    how = implementation.get("decode_dependent_launch")
    if not how:
        return "-"
    return "on" if str(how).startswith("programmatic dependent launch") else "off"


def crossover_rows(found: list[dict[str, Any]]) -> list[str]:
    """Decode crossovers: where each SSM or hybrid becomes faster than each Transformer. Where a model has
    several points at one length (runs of different code), the newest measured (the record's `ts`)
    counts."""
    decode: dict[str, dict[int, float]] = {}
    for r in sorted(found, key=lambda r: r.get("ts", 0)):
        value = median(r, "decode_per_token") if r.get("outcome") == "ok" else None
        if value is not None:
            decode.setdefault(r["model"], {})[r["context_len"]] = value
    others = sorted(m for m in decode if m not in TRANSFORMERS)
    rows = [
        "| transformer | SSM / hybrid | decode crossover (the SSM or hybrid faster beyond) |",
        "|---|---|---|",
    ]
    for t in (m for m in TRANSFORMERS if m in decode):
        rows += [f"| {t} | {s} | {crossover_cell(decode[t], decode[s])} |" for s in others]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="a folder of ctxscope agent run records")
    folder = parser.parse_args().folder
    found = points(folder)
    if not found:
        raise SystemExit(f"no point results in {folder}")
    print("\n".join(point_rows(found)))
    print()
    print("\n".join(crossover_rows(found)))


if __name__ == "__main__":
    main()
