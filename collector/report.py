"""`ctxscope report`: a static HTML report with the dashboard's figures and CSV/Parquet exports.

Per device: the device page's plotly figures (TTFT, decode per token and its floor fraction, peak
memory and its split, energy per token, operator shares: `readmodel.figures.device_figures`, medians of
pooled raw samples with interquartile bars), and the tables of the dashboard (maximum context,
crossovers). The page draws them with the plotly.js of the installed plotly package, written beside it,
so the report opens offline. `--png` also writes each figure as a PNG through kaleido, which drives a
headless Chrome or Chromium (no network needed once one is installed).
"""

from __future__ import annotations

import hashlib
import html
import json
import re
import time
from pathlib import Path
from typing import Any

import click

from ctxscope.collector.export import FORMATS, ExportError, export_tables
from ctxscope.collector.readmodel import views
from ctxscope.collector.readmodel.figures import device_figures
from ctxscope.collector.settings import open_for_reading
from ctxscope.collector.store import Store, StoreOpenError, StoreURLError

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
PLOTLY_JS = "plotly.min.js"
PNG_SIZE = {"width": 800, "height": 500}


class ReportError(RuntimeError):
    """A report that cannot be drawn (kaleido or its browser missing for --png)."""


def _script_json(value: Any) -> str:
    """JSON safe inside a <script> element: no `</script>` or `<!--` can end or bend it."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def write_pngs(figures: dict[Path, dict[str, Any]]) -> None:
    """Every figure as a PNG, in one headless browser session."""
    if not figures:
        return
    import plotly.io as pio

    for path in figures:
        path.unlink(missing_ok=True)  # a file from an earlier report must not pass for this one's
    try:
        pio.write_images([_visible_nul(f) for f in figures.values()], list(figures), format="png", **PNG_SIZE)
    except Exception as exc:  # kaleido reports a missing package or browser with several types
        raise ReportError(
            "PNG figures need kaleido and a Chrome or Chromium it can start "
            f"(pip install kaleido; apt-get install chromium): {type(exc).__name__}: {exc}"
        ) from exc
    # kaleido logs a figure that plotly.js fails to draw and goes on with the next one
    missing = [path.name for path in figures if not path.is_file()]
    if missing:
        raise ReportError(f"plotly.js could not draw {len(missing)} figure(s): {', '.join(missing)}")


def _visible_nul(value: Any) -> Any:
    """The figure with each NUL in its text shown as U+2400: a NUL in a name or title (device-supplied)
    makes plotly.js fail on the whole figure, which kaleido then skips."""
    if isinstance(value, str):
        return value.replace("\0", "\u2400")
    if isinstance(value, dict):
        return {key: _visible_nul(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_visible_nul(item) for item in value]
    return value


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


def device_section(view: dict[str, Any], out_dir: Path, pngs: dict[Path, dict[str, Any]]) -> str:
    """The device's figures and tables; the figures that --png should write are added to `pngs`."""
    device = view["summary"]["device"]
    ch = view["characterization"]
    divs = []
    for name, figure in device_figures(view).items():
        stem = file_stem(device, name)
        figure = _titled(figure, device)
        pngs[out_dir / f"{stem}.png"] = figure
        divs.append(
            f'<div class="fig" id="{html.escape(stem)}"></div>'
            f"<script>Plotly.newPlot({_script_json(stem)}, {_script_json(figure['data'])}, "
            f"{_script_json(figure['layout'])}, {{responsive: true}});</script>"
        )
    fits = {(f["model"], f["precision"], f["logits"], f["implementation"]): f for f in ch["memory_fits"]}
    maxctx = [
        [
            _named(m),
            m["precision"],
            m["logits"],
            m["max_ok_tokens"],
            f"{m['first_failure_tokens']} ({m['failure_outcome']})" if m["first_failure_tokens"] else None,
            _with_note(_searched(m), m["search_limit_note"]),
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
            _named(c["transformer"]),
            _named(c["other"]),
            c["transformer"]["precision"],
            c["transformer"]["logits"],
            ", ".join(str(round(x["length_tokens"])) for x in c["crossings"]) or "none in range",
            ", ".join(x["faster_above"] for x in c["crossings"]),
        ]
        for c in ch["crossovers"]
    ]
    return (
        f"<h2>{html.escape(device)}</h2><p>{view['result_count']} results</p>"
        f'<div class="figs">{"".join(divs)}</div>'
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
        + _table(
            ["transformer", "SSM / hybrid", "precision", "logits", "crossover (tokens)", "faster above"],
            crossovers,
        )
    )


def _titled(figure: dict[str, Any], device: str) -> dict[str, Any]:
    """The figure with the device named in its title (escaped: plotly.js renders markup in titles)."""
    title = figure["layout"].get("title", {}).get("text", "")
    text = f"{html.escape(device, quote=False)}: {title}"
    return {**figure, "layout": {**figure["layout"], "title": {"text": text}}}


def _searched(m: dict[str, Any]) -> str | None:
    """The search's answer: a lower bound when no probe up to its bound failed, with the cap it ran under."""
    tokens = m["searched_tokens"]
    if tokens is None:
        return None
    bound = m.get("search_bounded_by")
    text = f">= {tokens} (no limit up to {bound})" if bound else str(tokens)
    cap = m.get("search_memory_cap_bytes")
    return f"{text}, memory cap {cap / 2**30:.1f} GiB" if cap else text


def _named(series: dict[str, Any]) -> str:
    """A series' model, with what tells its kernel path apart where the model ran on several."""
    return f"{series['model']} [{series['path']}]" if series.get("path") else series["model"]


def _with_note(value: Any, note: str | None) -> Any:
    return f"{value}; {note}" if note else value


def _round(value: float | None) -> int | None:
    return None if value is None else round(value)


def build_report(source: Store, out_dir: Path, formats: tuple[str, ...] = FORMATS, png: bool = False) -> Path:
    """Write index.html, plotly.min.js, the exports and (with `png`) a PNG per figure into `out_dir`;
    returns the HTML's path."""
    from plotly.offline import get_plotlyjs

    out_dir.mkdir(parents=True, exist_ok=True)
    pngs: dict[Path, dict[str, Any]] = {}
    sections = [device_section(views.device(source, d["device"]), out_dir, pngs) for d in source.devices()]
    if png:
        write_pngs(pngs)
    exports = []
    for fmt in formats:
        try:
            exports += export_tables(source, out_dir, [fmt])
        except ExportError as exc:
            sections.append(f"<p>{fmt}: not written: {html.escape(str(exc))}</p>")
    (out_dir / PLOTLY_JS).write_text(get_plotlyjs(), encoding="utf-8")
    generated = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    links = " · ".join(f'<a href="{html.escape(p.name)}">{html.escape(p.name)}</a>' for p in exports)
    images = (
        " · ".join(f'<a href="{html.escape(p.name)}">{html.escape(p.name)}</a>' for p in pngs) if png else ""
    )
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>ctxscope report</title>'
        f'<script src="{PLOTLY_JS}"></script><style>'
        "body{font-family:system-ui,sans-serif;margin:1rem 2rem}.figs{display:flex;flex-wrap:wrap}"
        ".fig{width:48%;min-width:420px;height:420px;margin:0.5%}"
        "table{border-collapse:collapse}td,th{border-bottom:1px solid #ddd;padding:2px 8px;text-align:left}"
        f"</style></head><body><h1>ctxscope report</h1><p>generated {generated}"
        f"; medians of pooled raw samples with interquartile bars.</p><p>exports: {links or 'none'}</p>"
        + (f"<p>PNG figures: {images or 'none'}</p>" if png else "")
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
@click.option(
    "--png",
    is_flag=True,
    help="also write every figure as a PNG (needs kaleido and a Chrome or Chromium; works offline).",
)
@click.option("--json", "as_json", is_flag=True, help="print the index and every file written as JSON.")
def report(store_url: str | None, out_dir: Path, formats: tuple[str, ...], png: bool, as_json: bool) -> None:
    """Static HTML report with the dashboard's figures (TTFT, decode, memory, energy, operator shares),
    its tables and exports; it opens offline."""
    try:
        store = open_for_reading(store_url)
    except (StoreURLError, StoreOpenError) as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        index = build_report(store, out_dir, formats, png)
        if as_json:
            files = sorted(str(p) for p in out_dir.rglob("*") if p.is_file())
            click.echo(json.dumps({"index": str(index), "files": files}))
        else:
            click.echo(str(index))
    except ReportError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        store.close()
