"""Points measured in several fresh processes pool their samples and carry the spread between them."""

from __future__ import annotations

import pytest

from ctxscope.agent.engine import spread
from ctxscope.agent.engine.outcome import Measured, PhaseLoop
from ctxscope.agent.engine.plan import validate
from ctxscope.agent.phases import PhaseWindow
from ctxscope.shared.messages import Metric


def _reply(ttft: list[float]) -> Measured:
    windows = [PhaseWindow("prefill", i, i + 1, 16) for i in range(len(ttft))]
    return Measured(
        metrics={
            "ttft": Metric(unit="ms", method="cuda events; one prefill", samples=ttft),
            "memory_weights": Metric(unit="B", method="allocated", samples=[1.0]),
        },
        loops=[PhaseLoop(phase="prefill", stop_reason="stable", inner=1, windows=windows)],
        wall_s=2.0,
    )


def test_pool_keeps_every_sample_and_the_spread_between_processes() -> None:
    pooled = spread.pool([_reply([10.0, 10.0, 10.0]), _reply([12.0, 12.0, 12.0]), _reply([11.0, 11.0, 11.0])])
    ttft = pooled.metrics["ttft"]
    assert ttft.n == 9 and ttft.method.endswith("pooled from 3 fresh processes")
    info = pooled.details["process_spread"]["ttft"]
    assert info["process_medians"] == [10.0, 12.0, 11.0]
    assert info["between_rel_range"] == pytest.approx(2.0 / 11.0)
    assert info["within_rel_iqr"] == [0.0, 0.0, 0.0]
    assert pooled.details["processes"] == 3
    assert len(pooled.windows) == 9 and all(w.name == "prefill" for w in pooled.windows)
    assert len(pooled.record_details()["ttft_loop"]["windows"]) == 9
    assert pooled.wall_s == 6.0
    assert "process_implementations" not in pooled.details


def test_pool_lists_the_implementations_when_processes_chose_differently() -> None:
    replies = [_reply([10.0]), _reply([11.0])]
    replies[0].implementation["attention_backend_prefill"] = "cudnn_attention"
    replies[1].implementation["attention_backend_prefill"] = "flash_attention"
    pooled = spread.pool(replies)
    assert pooled.implementation["attention_backend_prefill"] == "cudnn_attention"
    assert [i["attention_backend_prefill"] for i in pooled.details["process_implementations"]] == [
        "cudnn_attention",
        "flash_attention",
    ]


def test_plan_spreads_short_points_only() -> None:
    plan = validate({"name": "p", "models": ["qwen2.5-0.5b"], "context_lengths": [4096, 16384, 65536]})
    assert [plan.spread_over(n) for n in (4096, 16384, 65536)] == [3, 3, 1]
    never = validate({"name": "p", "models": ["qwen2.5-0.5b"], "context_lengths": [4096], "isolate": "never"})
    assert never.spread_over(4096) == 1
