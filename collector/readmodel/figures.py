"""Plotly figures of the dashboard and the report, built from the JSON shapes of `views`.

Every curve is the median of pooled raw samples per context length, with the interquartile range
as error bars; the figures are plain plotly JSON that the pages hand to plotly.js unchanged.
"""

from __future__ import annotations

import html
import json
from collections import defaultdict
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio

from ctxscope.collector.readmodel.reference import overlay
from ctxscope.collector.shrunk import is_shrunk_label

TITLES = {
    "ttft": "Time to first token (prefill)",
    "decode_per_token": "Decode time per token",
    "memory_peak": "Peak memory",
    "decode_floor_fraction": "Decode: fraction of the memory-bandwidth floor (1 = at the floor)",
}
ENERGY_UNIT = "J/token"
PEAK_MEMORY = "memory_peak"
ANALYTIC_SUFFIX = "_analytic"
DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
HOVER = "%{x} tokens: %{y:.4g} %{customdata[1]} (n=%{customdata[0]})<br>%{customdata[2]}"
MEMORY_UNIT = "MiB"
# Trace keys whose strings plotly.js renders as its HTML subset: names, category labels, hover data.
TRACE_TEXT = ("name", "x", "y", "text", "hovertext", "customdata", "legendgroup")


def _layout(title: str, unit: str, log_y: bool = True) -> dict[str, Any]:
    return {
        "title": {"text": title},
        "xaxis": {"title": {"text": "context length (tokens)"}, "type": "log"},
        "yaxis": {"title": {"text": unit}, "type": "log" if log_y else "linear"},
        "margin": {"l": 60, "r": 20, "t": 40, "b": 50},
        "legend": {"orientation": "h", "y": -0.25},
        "template": "plotly_white",
    }


def _plain(fig: go.Figure) -> dict[str, Any]:
    """The figure as plain JSON, every text that plotly.js would render as markup escaped."""
    plain: dict[str, Any] = json.loads(pio.to_json(fig, validate=False))
    plain["data"] = [
        {key: _escaped(value) if key in TRACE_TEXT else value for key, value in trace.items()}
        for trace in plain.get("data", [])
    ]
    plain["layout"] = _escaped_titles(plain.get("layout", {}))
    return plain


def _escaped(value: Any) -> Any:
    """Strings (in lists, at any depth) HTML-escaped: plotly.js renders `<a href>`, `<span style>`
    and the like in names, labels and hover text, and shows entities as the characters they name."""
    if isinstance(value, str):
        return html.escape(value, quote=False)
    if isinstance(value, list):
        return [_escaped(v) for v in value]
    return value


def _escaped_titles(layout: dict[str, Any]) -> dict[str, Any]:
    """Every `text` in the layout (figure and axis titles) escaped; the rest as it was."""
    return {
        key: _escaped(value)
        if key == "text"
        else _escaped_titles(value)
        if isinstance(value, dict)
        else value
        for key, value in layout.items()
    }


def _series_traces(points: list[dict[str, Any]], metric: str) -> list[go.Scatter]:
    by_series: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for p in points:
        if metric in p["metrics"]:
            by_series[(p["device"], p["model"], p["precision"], p["logits"], p["implementation"])].append(p)
    several_devices = len({k[0] for k in by_series}) > 1
    paths: dict[tuple[str, ...], int] = defaultdict(int)
    for key in by_series:
        paths[key[:4]] += 1
    traces = []
    for (device, model, precision, logits, impl), rows in sorted(by_series.items()):
        rows.sort(key=lambda r: r["context_len"])
        stats = [r["metrics"][metric] for r in rows]
        name = f"{model} {precision}" + (f" @{device}" if several_devices else "")
        name += "" if logits == "last" else f" logits={logits}"
        if paths[(device, model, precision, logits)] > 1:
            name += f" [{impl}]"  # kernel paths never pool: say which curve is which
        traces.append(
            go.Scatter(
                x=[r["context_len"] for r in rows],
                y=[s["median"] for s in stats],
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": [s["p75"] - s["median"] for s in stats],
                    "arrayminus": [s["median"] - s["p25"] for s in stats],
                },
                customdata=[[s["n"], s["unit"], impl] for s in stats],
                hovertemplate=HOVER,
                mode="lines+markers",
                name=name,
            )
        )
    return traces


def _reference_traces(metric: str, unit: str, models: set[str]) -> list[go.Scatter]:
    ref = overlay(metric)
    if ref is None or ref["unit"] != unit:
        return []
    traces = []
    for model, values in sorted(ref["values"].items()):
        lengths = sorted(values, key=int)
        traces.append(
            go.Scatter(
                x=[int(n) for n in lengths],
                y=[values[n] for n in lengths],
                mode="lines+markers",
                line={"dash": "dot"},
                name=f"paper {model} ({ref['device']})",
                visible=True if model in models else "legendonly",
                hovertemplate=f"{ref['method']}<br>%{{x}} tokens: %{{y:.4g}} {unit}",
            )
        )
    return traces


def metric_figure(
    points: list[dict[str, Any]], metric: str, title: str, with_reference: bool
) -> dict[str, Any]:
    units = {p["metrics"][metric]["unit"] for p in points if metric in p["metrics"]}
    unit = units.pop() if len(units) == 1 else ""
    fig = go.Figure(_series_traces(points, metric), layout=_layout(title, unit))
    models = {p["model"] for p in points}
    # Shrunk models are no stand-ins for the real ones: the paper's figures never sit beside them alone.
    if with_reference and unit and not (models and all(is_shrunk_label(m) for m in models)):
        fig.add_traces(_reference_traces(metric, unit, models))
    return _plain(fig)


def memory_parts(points: list[dict[str, Any]]) -> list[str]:
    """The measured parts of the memory split (weights, cache, logits, activations, decode state...):
    every MiB metric but the peak itself and the analytic estimates."""
    return [
        name
        for name in names_with_unit(points, MEMORY_UNIT)
        if name != PEAK_MEMORY and not name.endswith(ANALYTIC_SUFFIX)
    ]


def split_figure(points: list[dict[str, Any]], parts: list[str]) -> dict[str, Any]:
    """Each part of the memory split against context, one dash style per part, per model."""
    fig = go.Figure(layout=_layout("Memory split", MEMORY_UNIT))
    for i, part in enumerate(parts):
        for trace in _series_traces(points, part):
            trace.name = f"{trace.name}: {part.removeprefix('memory_')}"
            trace.line = {"dash": DASHES[i % len(DASHES)]}
            fig.add_trace(trace)
    return _plain(fig)


def names_with_unit(points: list[dict[str, Any]], unit: str) -> list[str]:
    return sorted({name for p in points for name, s in p["metrics"].items() if s["unit"] == unit})


def device_figures(view: dict[str, Any], with_reference: bool = False) -> dict[str, dict[str, Any]]:
    """Figures of a device page: TTFT, decode and its floor fraction, each memory metric, energy per
    token, operator shares."""
    points = view["characterization"]["points"]
    figures = {
        metric: metric_figure(points, metric, TITLES[metric], with_reference)
        for metric in ("ttft", "decode_per_token")
    }
    for metric in ("decode_floor_fraction", PEAK_MEMORY):
        if any(metric in p["metrics"] for p in points):
            figures[metric] = metric_figure(points, metric, TITLES[metric], with_reference)
    parts = memory_parts(points)
    if parts:
        figures["memory_split"] = split_figure(points, parts)
    for name in names_with_unit(points, ENERGY_UNIT):
        figures[name] = metric_figure(points, name, name.replace("_", " "), False)
    if view["operator_shares"]:
        figures["operator_shares"] = shares_figure(view["operator_shares"])
    return figures


def shares_figure(shares: list[dict[str, Any]]) -> dict[str, Any]:
    """Stacked bars: percent of device time per operator class, one bar per profiled point and path."""
    labels = [s["label"] for s in shares]
    classes = sorted({cls for s in shares for cls in s["share_pct"]})
    fig = go.Figure(
        [go.Bar(name=cls, x=labels, y=[s["share_pct"].get(cls, 0.0) for s in shares]) for cls in classes],
        layout={
            "barmode": "stack",
            "title": {"text": "Operator shares of device time"},
            "yaxis": {"title": {"text": "% of device time"}, "range": [0, 100]},
            "template": "plotly_white",
            "margin": {"l": 60, "r": 20, "t": 40, "b": 80},
        },
    )
    return _plain(fig)


def compare_figure(view: dict[str, Any]) -> dict[str, Any]:
    """One trace per (device, model, precision, logits, kernel path) of the compared metric against
    context length."""
    traces: dict[tuple[str, str, str, str, str], list[tuple[int, dict[str, Any]]]] = defaultdict(list)
    unit = ""
    for row in view["rows"]:
        for dev, summary in row["by_device"].items():
            key = (dev, row["model"], row["precision"], row["logits"], row["implementation"])
            traces[key].append((row["context_len"], summary))
            unit = summary["unit"]
    paths: dict[tuple[str, ...], int] = defaultdict(int)
    for key in traces:
        paths[key[:4]] += 1
    fig = go.Figure(layout=_layout(TITLES.get(view["metric"], view["metric"]), unit))
    for (dev, model, precision, logits, impl), pts in sorted(traces.items()):
        pts.sort(key=lambda p: p[0])
        name = f"{dev}: {model} {precision}" + ("" if logits == "last" else f" logits={logits}")
        if paths[(dev, model, precision, logits)] > 1:
            name += f" [{impl}]"  # kernel paths never pool: say which curve is which
        fig.add_trace(
            go.Scatter(
                x=[p[0] for p in pts],
                y=[p[1]["median"] for p in pts],
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": [p[1]["p75"] - p[1]["median"] for p in pts],
                    "arrayminus": [p[1]["median"] - p[1]["p25"] for p in pts],
                },
                mode="lines+markers",
                name=name,
            )
        )
    return _plain(fig)
