"""Points measured in several fresh processes pool their samples and carry the spread between them."""

from __future__ import annotations

import pytest

from ctxscope.agent.engine import loop, spread
from ctxscope.agent.engine.outcome import Measured, PhaseLoop
from ctxscope.agent.engine.plan import validate
from ctxscope.agent.phases import PhaseWindow
from ctxscope.shared.messages import Metric
from tests.support import assert_method_matches_windows


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


def test_pooled_method_names_every_process_repetitions() -> None:
    """Each process settles on its own number of prefills per window (an H100 run pooled windows of 80,
    46 and 75): the pooled method once named only the first process's 80, disagreeing with its windows."""

    def reply(repetitions: int) -> Measured:
        windows = [PhaseWindow("prefill", i, i + 1, 4096 * repetitions, repetitions) for i in range(3)]
        phrase = loop.sample_phrase(windows, *loop.SAMPLE_WORDS["ttft"])
        method = f"CUDA events; {phrase} of 4096 random tokens, batch 1"
        return Measured(
            metrics={"ttft": Metric(unit="ms", method=method, samples=[20.0, 20.0, 20.0])},
            loops=[PhaseLoop(phase="prefill", stop_reason="max_time", inner=repetitions, windows=windows)],
            wall_s=1.0,
        )

    pooled = spread.pool([reply(80), reply(46), reply(75)])
    method = pooled.metrics["ttft"].method
    assert method == (
        "CUDA events; mean of 46/75/80 back-to-back prefills (one window each) of 4096 random tokens,"
        " batch 1; pooled from 3 fresh processes"
    )
    assert_method_matches_windows(method, pooled.record_details()["ttft_loop"], "one prefill", "prefills")
    single = spread.pool([reply(1), reply(4)]).metrics["ttft"].method
    assert single.startswith("CUDA events; mean of 1/4 back-to-back prefills"), single


def test_plan_spreads_short_points_only() -> None:
    plan = validate({"name": "p", "models": ["qwen2.5-0.5b"], "context_lengths": [4096, 16384, 65536]})
    assert [plan.spread_over(n) for n in (4096, 16384, 65536)] == [3, 3, 1]
    never = validate({"name": "p", "models": ["qwen2.5-0.5b"], "context_lengths": [4096], "isolate": "never"})
    assert never.spread_over(4096) == 1


def test_pooled_floor_fractions_stay_one_per_pooled_decode_sample() -> None:
    """decode_floor_fraction is one per decode sample: when the decode samples pool, so do its."""

    def reply(ms: float) -> Measured:
        windows = [PhaseWindow("decode", i, i + 1, 4, 4) for i in range(2)]
        return Measured(
            metrics={
                "decode_per_token": Metric(unit="ms", method="one greedy step", samples=[ms, ms]),
                "decode_floor_fraction": Metric(
                    unit="ratio", method="one per decode sample", samples=[0.5 / ms, 0.5 / ms]
                ),
            },
            loops=[PhaseLoop(phase="decode", stop_reason="stable", inner=4, windows=windows)],
        )

    pooled = spread.pool([reply(1.0), reply(2.0), reply(4.0)])
    fraction = pooled.metrics["decode_floor_fraction"]
    assert fraction.n == pooled.metrics["decode_per_token"].n == 6
    assert fraction.samples == [0.5, 0.5, 0.25, 0.25, 0.125, 0.125]
    assert "pooled from 3 fresh processes" in fraction.method
