"""`ctxscope report`: a static HTML report with PNG figures and CSV/Parquet exports.

Per device: TTFT, decode time per token, peak memory (each memory split) and energy per token
against context length (medians of pooled raw samples, interquartile bars), operator shares, and
the tables of the dashboard (maximum context, crossovers, memory fits). PNGs are drawn with
matplotlib (Agg backend, no display needed).
"""

from __future__ import annotations

import hashlib
import html
import json
import re
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import click

from ctxscope.collector.export import FORMATS, ExportError, export_tables
from ctxscope.collector.readmodel import views
from ctxscope.collector.readmodel.figures import (
    ENERGY_UNIT,
    PEAK_MEMORY,
    TITLES,
    memory_parts,
    names_with_unit,
)
from ctxscope.collector.readmodel.source import FleetSource
from ctxscope.collector.settings import default_store_url
from ctxscope.collector.store import StoreOpenError, StoreURLError, open_store

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


class ReportError(RuntimeError):
    """A report that cannot be drawn (matplotlib missing)."""


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise ReportError("PNG figures need matplotlib (pip install matplotlib)") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def metric_png(points: list[dict[str, Any]], metrics: list[str], title: str, path: Path) -> Path | None:
    """Medians against context, one line per series (and metric) with IQR bars; None when no point has
    any of the metrics."""
    series: dict[str, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
    paths: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for p in points:
        paths[(p["model"], p["precision"], p["logits"])].add(p["implementation"])
    for p in points:
        for metric in metrics:
            if metric not in p["metrics"]:
                continue
            label = f"{p['model']} {p['precision']}" + (
                "" if p["logits"] == "last" else f" logits={p['logits']}"
            )
            if len(paths[(p["model"], p["precision"], p["logits"])]) > 1:
                label += f" [{p['implementation']}]"  # kernel paths never pool: one line each
            if len(metrics) > 1:
                label += f": {metric.removeprefix('memory_')}"
            series[label].append((p["context_len"], p["metrics"][metric]))
    if not series:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    unit = ""
    for label, rows in sorted(series.items()):
        rows.sort(key=lambda r: int(r[0]))
        stats = [r[1] for r in rows]
        unit = stats[0]["unit"]
        ax.errorbar(
            [r[0] for r in rows],
            [s["median"] for s in stats],
            yerr=[[s["median"] - s["p25"] for s in stats], [s["p75"] - s["median"] for s in stats]],
            marker="o",
            capsize=3,
            label=label,
        )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel(unit)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def shares_png(shares: list[dict[str, Any]], path: Path) -> Path | None:
    """Stacked bars of operator shares (percent of device time), one bar per profiled point."""
    if not shares:
        return None
    plt = _pyplot()
    labels = [f"{s['model']}\n{s['precision']} {s['context_len']} {s['phase']}" for s in shares]
    classes = sorted({cls for s in shares for cls in s["share_pct"]})
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(shares)), 4.5), dpi=110)
    bottom = [0.0] * len(shares)
    for cls in classes:
        values = [s["share_pct"].get(cls, 0.0) for s in shares]
        ax.bar(labels, values, bottom=bottom, label=cls)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_ylabel("% of device time")
    ax.set_ylim(0, 100)
    ax.set_title("Operator shares")
    ax.legend(fontsize=8, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape('–' if v is None else str(v))}</td>" for v in row) + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def file_stem(*parts: str) -> str:
    """A file name stem from device-supplied names that stays one plain name inside the out dir:
    anything but letters, digits, `_`, `.` and `-` becomes `_`, no leading dot, and a short hash of
    the original when it had to change, so that two names never share a file."""
    original = "-".join(parts)
    stem = _UNSAFE.sub("_", original).lstrip(".") or "_"
    if stem != original:
        stem += "-" + hashlib.sha256(original.encode("utf-8")).hexdigest()[:8]
    return stem


def device_section(view: dict[str, Any], out_dir: Path) -> str:
    device = view["summary"]["device"]
    ch = view["characterization"]
    points = ch["points"]
    charts = [
        (["ttft"], "ttft", TITLES["ttft"]),
        (["decode_per_token"], "decode_per_token", TITLES["decode_per_token"]),
        ([PEAK_MEMORY], PEAK_MEMORY, TITLES[PEAK_MEMORY]),
        (memory_parts(points), "memory_split", "Memory split"),
    ]
    charts += [([name], name, name.replace("_", " ")) for name in names_with_unit(points, ENERGY_UNIT)]
    images = []
    for metrics, stem, title in charts:
        png = metric_png(points, metrics, f"{device}: {title}", out_dir / f"{file_stem(device, stem)}.png")
        if png is not None:
            images.append(png.name)
    shares = shares_png(view["operator_shares"], out_dir / f"{file_stem(device, 'operator-shares')}.png")
    if shares is not None:
        images.append(shares.name)
    fits = {(f["model"], f["precision"], f["logits"], f["implementation"]): f for f in ch["memory_fits"]}
    maxctx = [
        [
            m["model"],
            m["precision"],
            m["logits"],
            m["max_ok_tokens"],
            f"{m['first_failure_tokens']} ({m['failure_outcome']})" if m["first_failure_tokens"] else None,
            _with_note(m["searched_tokens"], m["search_limit_note"]),
            _round(
                fits.get((m["model"], m["precision"], m["logits"], m["implementation"]), {}).get(
                    "extrapolated_limit_tokens"
                )
            ),
        ]
        for m in ch["max_context"]
    ]
    crossovers = [
        [
            c["transformer"]["model"],
            c["other"]["model"],
            ", ".join(str(round(x["length_tokens"])) for x in c["crossings"]) or "none in range",
            ", ".join(x["faster_above"] for x in c["crossings"]),
        ]
        for c in ch["crossovers"]
    ]
    figures = "".join(f'<img src="{html.escape(name)}" alt="{html.escape(name)}">' for name in images)
    return (
        f"<h2>{html.escape(device)}</h2><p>{view['result_count']} results</p>"
        f'<div class="figs">{figures}</div>'
        "<h3>Maximum context</h3>"
        + _table(
            [
                "model",
                "precision",
                "logits",
                "longest ok",
                "first failure",
                "search result",
                "fit limit (extrapolated)",
            ],
            maxctx,
        )
        + "<h3>Transformer / SSM crossovers (TTFT)</h3>"
        + _table(["transformer", "SSM / hybrid", "crossover (tokens)", "faster above"], crossovers)
    )


def _with_note(value: Any, note: str | None) -> Any:
    return f"{value}; {note}" if note else value


def _round(value: float | None) -> int | None:
    return None if value is None else round(value)


def build_report(source: FleetSource, out_dir: Path, formats: tuple[str, ...] = FORMATS) -> Path:
    """Write index.html, the PNGs and the exports into `out_dir`; returns the HTML's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sections = [device_section(views.device(source, d["device"]), out_dir) for d in source.devices()]
    exports = []
    for fmt in formats:
        try:
            exports += export_tables(source, out_dir, [fmt])
        except ExportError as exc:
            sections.append(f"<p>{fmt}: not written: {html.escape(str(exc))}</p>")
    generated = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    links = " · ".join(f'<a href="{html.escape(p.name)}">{html.escape(p.name)}</a>' for p in exports)
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>ctxscope report</title><style>'
        "body{font-family:system-ui,sans-serif;margin:1rem 2rem}img{max-width:48%;margin:0.5%}"
        "table{border-collapse:collapse}td,th{border-bottom:1px solid #ddd;padding:2px 8px;text-align:left}"
        f"</style></head><body><h1>ctxscope report</h1><p>generated {generated}"
        f"; medians of pooled raw samples with interquartile bars.</p><p>exports: {links or 'none'}</p>"
        + "".join(sections)
        + "</body></html>"
    )
    index = out_dir / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


@click.command()
@click.option("--store", "store_url", default=None, help="sqlite:///PATH or postgresql://USER@HOST/DB.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option(
    "--format", "formats", type=click.Choice(FORMATS), multiple=True, default=FORMATS, show_default=True
)
@click.option("--json", "as_json", is_flag=True, help="print the index and every file written as JSON.")
def report(store_url: str | None, out_dir: Path, formats: tuple[str, ...], as_json: bool) -> None:
    """Static HTML report with PNG figures (TTFT, memory, energy, operator shares) and exports."""
    try:
        store = open_store(store_url or default_store_url())
    except (StoreURLError, StoreOpenError) as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        index = build_report(store, out_dir, formats)
        if as_json:
            files = sorted(str(p) for p in out_dir.rglob("*") if p.is_file())
            click.echo(json.dumps({"index": str(index), "files": files}))
        else:
            click.echo(str(index))
    except ReportError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        store.close()
