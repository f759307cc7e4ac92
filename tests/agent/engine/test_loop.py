"""The measurement loop's stopping rules, timed for real on the CPU clock."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import torch

from ctxscope.agent.engine.loop import LoopPolicy, Timer, measure, stable

CPU = Timer(torch.device("cpu"))


def test_stable_needs_two_medians_and_a_small_change() -> None:
    assert not stable([1.0], 0.02)
    assert stable([1.0, 1.01], 0.02)
    assert not stable([1.0, 1.05], 0.02)


def test_stops_at_min_reps_when_stable() -> None:
    calls: list[int] = []
    result = measure(
        lambda: calls.append(1),
        name="prefill",
        tokens_per_run=8,
        timer=CPU,
        policy=LoopPolicy(warmups=2, min_reps=4, max_reps=50, min_time_s=0.0, stable_rel=10.0),
    )
    assert result.stop_reason == "stable"
    assert len(result.samples_ns) == 4
    assert len(calls) == 2 + 4  # warm-ups are run but not kept
    assert [w.tokens for w in result.windows] == [8] * 4


def test_min_time_keeps_repeating_past_min_reps() -> None:
    result = measure(
        lambda: time.sleep(0.002),
        name="prefill",
        tokens_per_run=1,
        timer=CPU,
        policy=LoopPolicy(warmups=0, min_reps=2, max_reps=500, min_time_s=0.1, stable_rel=10.0),
    )
    assert result.stop_reason == "stable"
    assert sum(result.samples_ns) >= 0.09e9
    assert len(result.samples_ns) > 2
    assert all(s >= 2e6 for s in result.samples_ns)


def test_unstable_median_runs_to_the_cap() -> None:
    durations = iter([0.001 * (i % 7 + 1) for i in range(100)])
    result = measure(
        lambda: time.sleep(next(durations)),
        name="decode",
        tokens_per_run=1,
        timer=CPU,
        policy=LoopPolicy(warmups=0, min_reps=3, max_reps=12, min_time_s=0.0, stable_rel=1e-9),
    )
    assert result.stop_reason == "max_reps"
    assert len(result.samples_ns) == 12


def test_observer_window_raises_inner_and_samples_stay_per_run() -> None:
    prepared: list[int] = []
    result = measure(
        lambda: time.sleep(0.001),
        name="decode",
        tokens_per_run=1,
        timer=CPU,
        policy=LoopPolicy(warmups=1, min_reps=3, max_reps=3, min_time_s=0.0),
        inner=2,
        min_window_ns=20_000_000,
        prepare=lambda: prepared.append(1),
    )
    assert result.inner >= 10
    for window, sample in zip(result.windows, result.samples_ns, strict=True):
        assert window.end_ns - window.start_ns >= 20_000_000
        assert window.repetitions == result.inner
        assert 1e6 <= sample < 20e6  # per run, not per window
    assert len(prepared) >= 1 + 1 + 3  # warm-up, calibration, repetitions


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        LoopPolicy(min_reps=5, max_reps=2)


def test_time_cap_never_cuts_below_min_reps() -> None:
    result = measure(
        lambda: time.sleep(0.02),
        name="prefill",
        tokens_per_run=1,
        timer=CPU,
        policy=LoopPolicy(
            warmups=0, min_reps=4, max_reps=50, min_time_s=0.0, max_time_s=0.01, stable_rel=1e-9
        ),
    )
    assert len(result.samples_ns) == 4
    assert result.stop_reason == "max_time"


class _ScriptedTimer(Timer):
    """A fake clock: each call to `time_ns` returns the next scripted window span (ns), back to back,
    without running the body (whose repetitions grow with every short window)."""

    def __init__(self, spans: list[int]) -> None:
        super().__init__(torch.device("cpu"))
        self.spans = iter(spans)
        self.now = 0

    def time_ns(self, body: Callable[[], None]) -> tuple[float, int, int]:
        span = next(self.spans)
        start, self.now = self.now, self.now + span
        return float(span), start, self.now


def test_attempt_limit_with_too_few_samples_says_so() -> None:
    # calibration sees a long window; then 2 windows long enough, and every later one too short
    timer = _ScriptedTimer([2000, 1500, 1500] + [10] * 20)
    policy = LoopPolicy(warmups=0, min_reps=5, max_reps=5, min_time_s=0.0, stable_rel=10.0)
    result = measure(
        lambda: None, name="decode", tokens_per_run=1, timer=timer, policy=policy, min_window_ns=1000
    )
    assert len(result.samples_ns) == 2
    assert result.stop_reason.startswith("max_attempts") and "max_reps" not in result.stop_reason
    assert "10 repetitions tried, 2 kept" in result.stop_reason
    assert result.shortfall.startswith("only 2 samples, fewer than min_reps 5")


def test_attempt_limit_without_any_sample_raises() -> None:
    timer = _ScriptedTimer([2000] + [10] * 20)
    policy = LoopPolicy(warmups=0, min_reps=3, max_reps=3, min_time_s=0.0)
    with pytest.raises(RuntimeError, match="prefill: no sample kept, max_attempts: 6 repetitions"):
        measure(
            lambda: None, name="prefill", tokens_per_run=1, timer=timer, policy=policy, min_window_ns=1000
        )


def test_enough_samples_have_no_shortfall() -> None:
    result = measure(
        lambda: None,
        name="prefill",
        tokens_per_run=1,
        timer=CPU,
        policy=LoopPolicy(warmups=0, min_reps=3, max_reps=3, min_time_s=0.0, stable_rel=1e-9),
    )
    assert result.stop_reason == "max_reps" and result.shortfall == ""


def test_a_timed_metric_with_too_few_samples_says_so_in_its_method() -> None:
    from ctxscope.agent.engine.point import _metric_ms

    timer = _ScriptedTimer([2000, 1500, 1500] + [10] * 20)
    policy = LoopPolicy(warmups=0, min_reps=5, max_reps=5, min_time_s=0.0, stable_rel=10.0)
    result = measure(
        lambda: None, name="decode", tokens_per_run=1, timer=timer, policy=policy, min_window_ns=1000
    )
    method = _metric_ms(result, "time.perf_counter_ns; one greedy step").method
    assert method.startswith("time.perf_counter_ns; one greedy step; only 2 samples, fewer than min_reps 5")
    assert "(max_attempts: 10 repetitions tried, 2 kept;" in method
