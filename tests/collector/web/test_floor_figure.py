"""The device page shows decode's fraction of the bandwidth floor when the points carry it."""

from __future__ import annotations

from typing import Any

from ctxscope.collector.readmodel.figures import device_figures


def _point(length: int, metrics: dict[str, float], unit: str) -> dict[str, Any]:
    stats = {name: {"median": v, "p25": v, "p75": v, "n": 3, "unit": unit} for name, v in metrics.items()}
    return {
        "device": "h200-1",
        "model": "qwen2.5-0.5b",
        "precision": "bf16",
        "logits": "last",
        "implementation": "sdpa-gqa",
        "context_len": length,
        "metrics": stats,
    }


def test_floor_fraction_figure_only_when_measured() -> None:
    with_floor = [_point(n, {"decode_floor_fraction": f}, "ratio") for n, f in ((4096, 0.4), (65536, 0.6))]
    figures = device_figures({"characterization": {"points": with_floor}, "operator_shares": []})
    (trace,) = figures["decode_floor_fraction"]["data"]
    assert trace["x"] == [4096, 65536] and trace["y"] == [0.4, 0.6]
    assert "floor" in figures["decode_floor_fraction"]["layout"]["title"]["text"]
    without = [_point(4096, {"decode_per_token": 1.2}, "ms")]
    assert "decode_floor_fraction" not in device_figures(
        {"characterization": {"points": without}, "operator_shares": []}
    )
