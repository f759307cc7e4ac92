"""Grow-then-bisect logic of the max-context search against exact thresholds."""

from __future__ import annotations

import pytest

from ctxscope.agent.engine.maxctx import Probe, SearchSettings, index_limit_note, search


def threshold_probe(limit: int, failure: str = "oom"):
    seen: list[int] = []

    def probe(length: int) -> Probe:
        seen.append(length)
        return Probe(length, "ok" if length <= limit else failure, 0.0)

    return probe, seen


@pytest.mark.parametrize("limit", [1500, 4096, 70_000, 220_000, 333_333])
def test_finds_the_limit_within_one_percent(limit: int) -> None:
    probe, seen = threshold_probe(limit)
    result = search(probe, start=1024, max_tokens=1 << 20, rel_tol=0.01)
    assert result.largest_ok is not None and result.smallest_failing is not None
    assert result.largest_ok <= limit < result.smallest_failing
    assert result.smallest_failing - result.largest_ok <= max(0.01 * result.largest_ok, 1)
    assert result.failing_outcome == "oom"
    assert result.bounded_by is None
    assert [p.context_len for p in result.probes] == seen
    assert len(seen) == len(set(seen))


def test_fixed_step() -> None:
    probe, _ = threshold_probe(50_000)
    result = search(probe, start=1024, max_tokens=1 << 20, step=512)
    assert result.smallest_failing - result.largest_ok <= 512
    assert result.largest_ok <= 50_000 < result.smallest_failing


def test_bounded_by_max_tokens_is_said() -> None:
    probe, seen = threshold_probe(10**9)
    result = search(probe, start=1000, max_tokens=5000)
    assert seen == [1000, 2000, 4000, 5000]
    assert result.largest_ok == 5000 and result.smallest_failing is None
    assert result.summary() == ">= 5000 tokens, bounded by max_tokens=5000"


def test_start_that_fails_bisects_downwards() -> None:
    probe, _ = threshold_probe(300)
    result = search(probe, start=1024, max_tokens=4096, rel_tol=0.01)
    assert result.largest_ok is not None and result.largest_ok <= 300 < result.smallest_failing


def test_nothing_fits() -> None:
    probe, _ = threshold_probe(0, failure="fault")
    result = search(probe, start=4, max_tokens=64)
    assert result.largest_ok is None
    assert result.smallest_failing == 1 and result.failing_outcome == "fault"


def test_failure_kind_of_the_boundary_is_kept() -> None:
    def probe(length: int) -> Probe:
        if length <= 3000:
            return Probe(length, "ok", 0.1)
        return Probe(length, "timeout" if length > 3500 else "oom", 1.0, error="x")

    result = search(probe, start=1000, max_tokens=100_000, rel_tol=0.01)
    assert result.failing_outcome == "oom"
    assert [p.outcome for p in result.probes][:5] == ["ok", "ok", "timeout", "ok", "oom"]


def test_upper_guess_is_probed_right_after_the_start() -> None:
    probe, seen = threshold_probe(75_000)
    result = search(probe, start=73_728, upper_guess=77_824, max_tokens=1 << 20, rel_tol=0.01)
    assert seen[:2] == [73_728, 77_824]
    assert result.largest_ok is not None and result.largest_ok <= 75_000 < result.smallest_failing
    assert len(seen) <= 5  # a 4096-token interval needs three bisections to reach 1%


def test_an_upper_guess_that_fits_keeps_growing_from_it() -> None:
    probe, seen = threshold_probe(300_000)
    result = search(probe, start=100_000, upper_guess=150_000, max_tokens=1 << 20, rel_tol=0.01)
    assert seen[:3] == [100_000, 150_000, 300_000]
    assert result.largest_ok == 300_000


def test_upper_guess_must_be_above_the_start() -> None:
    probe, _ = threshold_probe(1000)
    with pytest.raises(ValueError, match="upper_guess"):
        search(probe, start=2048, upper_guess=2048)


def test_a_fault_past_the_index_limit_is_named() -> None:
    probe, _ = threshold_probe(333_000, failure="fault")
    result = search(probe, start=262_144, upper_guess=393_216, max_tokens=1 << 21, rel_tol=0.01)
    note = index_limit_note(result.smallest_failing, result.failing_outcome, 333_046)
    assert note is not None and "333046" in note
    assert index_limit_note(result.smallest_failing, result.failing_outcome, None) is None
    # the fault came before the limit: something else failed
    assert index_limit_note(result.smallest_failing, result.failing_outcome, 400_000) is None


def test_an_out_of_memory_limit_gets_no_index_note() -> None:
    probe, _ = threshold_probe(500_000, failure="oom")
    result = search(probe, start=262_144, max_tokens=1 << 21, rel_tol=0.01)
    assert index_limit_note(result.smallest_failing, result.failing_outcome, 333_046) is None


@pytest.mark.parametrize("step", [0, -5])
def test_a_step_below_one_token_is_refused(step: int) -> None:
    """A gap of 0 tokens is never reached: the bisection would probe the same length for ever."""
    probe, seen = threshold_probe(100)
    with pytest.raises(ValueError, match="step"):
        search(probe, start=64, max_tokens=128, step=step)
    assert seen == []


def test_the_method_names_the_step_that_ran() -> None:
    assert "bisect to 1 tokens" in SearchSettings(step=1).method(None)
    assert "bisect to 0 tokens" in SearchSettings(step=0).method(None)  # not the unused rel_tol
    assert "bisect to 1.0%" in SearchSettings(rel_tol=0.01).method(None)
