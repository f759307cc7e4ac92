"""Which decode step the dashboard predicts for a target: the one its own decode points took, else the
agent's default on the device it calibrated."""

from __future__ import annotations

from typing import Any

import pytest

from ctxscope.collector.predict.fleet import decode_on_graph


def calibration(device: str, ts: int) -> dict[str, Any]:
    return {"kind": "run_started", "ts": ts, "plan": {"calibrate": {"device": device}}}


def decode_point(path: str, ts: int) -> dict[str, Any]:
    return {
        "kind": "result",
        "ts": ts,
        "family": "transformer",
        "outcome": "ok",
        "metrics": {"decode_per_token": {"samples": [1.0]}},
        "implementation": {"decode_path": path},
    }


@pytest.mark.parametrize(
    ("records", "expected"),
    [
        ([calibration("cuda", 1)], (True, "assumed")),
        ([calibration("cpu", 1)], (False, "assumed")),
        ([calibration("cpu", 1), calibration("cuda:0", 2)], (True, "assumed")),
        ([calibration("cuda", 1), decode_point("eager_dynamic_cache", 2)], (False, "measured")),
        (
            [decode_point("eager_dynamic_cache", 1), decode_point("compiled_cuda_graph_static_cache", 2)],
            (True, "measured"),
        ),
        ([], (False, "assumed")),
    ],
)
def test_newest_evidence_decides(records: list[dict[str, Any]], expected: tuple[bool, str]) -> None:
    graphed, status, how = decode_on_graph(records)
    assert (graphed, status) == expected and how
