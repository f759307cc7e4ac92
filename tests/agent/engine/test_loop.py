"""The measurement loop's stopping rules, timed for real on the CPU clock."""

from __future__ import annotations

import time

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
