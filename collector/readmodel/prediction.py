"""Plotly figures of a device's prediction view (`ctxscope.collector.predict.fleet.prediction_view`):
predicted curves with their bands and the device's measured points, and per-class device time of the
source beside the target with the factor applied."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from ctxscope.collector.readmodel.figures import _layout, _plain

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
TITLES = {"ttft": "Predicted time to first token", "decode_per_token": "Predicted decode time per token"}


def _band(points: list[dict[str, Any]], color: str, name: str) -> list[go.Scatter]:
    """The band as a filled polygon over points with an upper end; lower bounds as upward triangles."""
    closed = [p for p in points if p["high_ms"] is not None]
    traces = []
    if closed:
        x = [p["context_len"] for p in closed]
        traces.append(
            go.Scatter(
                x=x + x[::-1],
                y=[p["high_ms"] for p in closed] + [p["low_ms"] for p in closed][::-1],
                fill="toself",
                fillcolor=color,
                opacity=0.18,
                line={"width": 0},
                hoverinfo="skip",
                name=f"{name} band",
                legendgroup=name,
                showlegend=False,
            )
        )
    bounds = [p for p in points if p["lower_bound"]]
    if bounds:
        traces.append(
            go.Scatter(
                x=[p["context_len"] for p in bounds],
                y=[p["latency_ms"] for p in bounds],
                mode="markers",
                marker={"symbol": "triangle-up", "size": 10, "color": color},
                name=f"{name}: lower bound (host-bound, uncalibrated)",
                legendgroup=name,
            )
        )
    return traces


def curve_figure(view: dict[str, Any], metric: str) -> dict[str, Any]:
    fig = go.Figure()
    curves = [c for c in view["curves"] if c["metric"] == metric]
    for i, c in enumerate(curves):
        color = PALETTE[i % len(PALETTE)]
        name = c["name"]
        for trace in _band(c["points"], color, name):
            fig.add_trace(trace)
        fig.add_trace(
            go.Scatter(
                x=[p["context_len"] for p in c["points"]],
                y=[p["latency_ms"] for p in c["points"]],
                mode="lines+markers",
                line={"color": color, "dash": "dash"},
                name=f"{name} predicted",
                legendgroup=name,
                customdata=[[p["low_ms"], p["high_ms"] or float("nan")] for p in c["points"]],
                hovertemplate="%{x} tokens: %{y:.4g} ms (band %{customdata[0]:.4g}..%{customdata[1]:.4g})",
            )
        )
        seen = [r for r in c["comparison"] if "predicted_ms" in r or "note" in r]
        if seen:
            fig.add_trace(
                go.Scatter(
                    x=[r["context_len"] for r in seen],
                    y=[r["measured_ms"] for r in seen],
                    mode="markers",
                    marker={"symbol": "x", "size": 10, "color": color},
                    name=f"{name} measured",
                    legendgroup=name,
                )
            )
    layout = _layout(f"{TITLES.get(metric, metric)} on {view['device']} (from {view['source_device']})", "ms")
    fig.update_layout(**layout)
    return _plain(fig)


def class_bars(view: dict[str, Any]) -> dict[str, Any]:
    """Per-class device time at each prefill curve's longest length: source beside target, factor shown."""
    fig = go.Figure()
    bars: dict[str, tuple[list[str], list[float], list[str]]] = {}
    for c in view["curves"]:
        if c["phase"] != "prefill":
            continue
        last = c["points"][-1]
        label = f"{c['name']} @ {last['context_len']}"
        for cls in last["classes"]:
            x, y, text = bars.setdefault(cls["cls"], ([], [], []))
            x += [f"{label}: {view['source_device']}", f"{label}: {view['device']}"]
            y += [cls["source_ms"], cls["target_ms"]]
            text += ["", f"×{cls['factor']:.3g} ({cls['family']}, {cls['status']})"]
    for cls, (x, y, text) in bars.items():
        fig.add_trace(
            go.Bar(x=x, y=y, name=cls, text=text, textposition="inside", hovertemplate="%{y:.4g} ms %{text}")
        )
    fig.update_layout(
        barmode="stack",
        title={"text": "Device time per kernel class, source → target (factor = source rate / target rate)"},
        yaxis={"title": {"text": "ms per pass"}},
        template="plotly_white",
        margin={"l": 60, "r": 20, "t": 40, "b": 120},
    )
    return _plain(fig)


def prediction_figures(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    metrics = dict.fromkeys(c["metric"] for c in view["curves"])
    figures = {f"predicted-{m}": curve_figure(view, m) for m in metrics}
    figures["predicted-classes"] = class_bars(view)
    return figures
