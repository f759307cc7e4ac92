"""Calibration records say what one sample is, how many warm-ups and samples were taken and why they
stopped; a skipped benchmark names nothing as run."""

from __future__ import annotations

import time

import pytest

from ctxscope.agent.calibrate import bench
from ctxscope.agent.calibrate.run import calibrate_run
from ctxscope.agent.records import MemorySink
from ctxscope.shared.messages import PointResult


@pytest.fixture(scope="module")
def results() -> dict[str, PointResult]:
    sink = MemorySink()
    calibrate_run(sink, device="cpu", budget_s=3.0, tiny=True)
    return {r.point_id: r for r in sink.records if r.kind == "result"}


def test_methods_say_what_one_sample_is_and_the_counts(results: dict[str, PointResult]) -> None:
    for name in ("calib-gemm", "calib-stream", "calib-sdpa", "calib-host-per-op"):
        r = results[name]
        assert r.outcome == "ok"
        timed = r.metrics["calibration_time"]
        assert "one sample: " in timed.method and "spread: min..max of the samples" in timed.method
        assert f"{bench.WARMUPS} warm-ups, then {timed.n} samples (" in timed.method
        assert "in the samples" not in timed.method  # the old, garbled spread phrase
        if "calibration_rate" in r.metrics:
            rate = r.metrics["calibration_rate"]
            assert "one sample: analytic work (" in rate.method and "/ the time of one" in rate.method
            assert f"{rate.n} samples after {bench.WARMUPS} warm-ups (" in rate.method
            assert rate.method.endswith("; spread: min..max of the samples")
    assert "ms per op" in results["calib-host-per-op"].metrics["calibration_time"].method


def test_skipped_benchmarks_name_nothing_as_run(results: dict[str, PointResult]) -> None:
    skipped = [r for r in results.values() if r.outcome == "skipped"]
    assert "calib-launch-floor" in {r.point_id for r in skipped}  # no GPU here
    for r in skipped:
        assert r.implementation == {}, r.point_id
        assert r.metrics == {} and r.error and r.details["skipped"] == r.error


def test_skipped_without_mamba_ssm_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "mamba_ssm", None)  # import fails as when absent
    sink = MemorySink()
    calibrate_run(sink, device="cpu", budget_s=1.0, tiny=True)
    scan = next(r for r in sink.records if r.kind == "result" and r.point_id == "calib-selective-scan")
    assert scan.outcome == "skipped" and scan.implementation == {}
    assert (scan.error or "").startswith("mamba_ssm unavailable, ")


def test_timer_stops_when_the_median_is_stable_or_at_its_share(monkeypatch: pytest.MonkeyPatch) -> None:
    timing = bench.Timer("cpu", 1e9)(lambda: None)
    assert timing.warmups == bench.WARMUPS and len(timing.samples_ms) >= bench.MIN_REPS
    assert timing.stop.startswith("median moved <")
    monkeypatch.setattr("ctxscope.agent.engine.loop.stable", lambda medians, rel: False)
    started = time.perf_counter()
    timing = bench.Timer("cpu", 0.05)(lambda: time.sleep(0.005))
    assert time.perf_counter() - started < 0.5
    assert bench.MIN_REPS <= len(timing.samples_ms) < bench.MAX_REPS
    assert timing.stop.startswith("time share of 0.05 s spent")
    timing = bench.Timer("cpu", 1e9)(lambda: None)
    assert len(timing.samples_ms) == bench.MAX_REPS and timing.stop == f"MAX_REPS {bench.MAX_REPS}"


def test_time_shares_keep_the_calibration_within_its_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    # never stable: every benchmark repeats until its share of the time left is spent
    monkeypatch.setattr("ctxscope.agent.engine.loop.stable", lambda medians, rel: False)
    started = time.monotonic()
    figures = calibrate_run(MemorySink(), device="cpu", budget_s=2.0, tiny=True)
    wall = time.monotonic() - started
    timed = [f for f in figures if f.samples_ms]
    assert all(f.stop.startswith(("time share of", "MAX_REPS")) for f in timed)
    assert sum(sum(f.samples_ms) for f in timed) <= 2000.0
    assert wall < 2.0 + 1.0  # set-up and warm-ups of tiny sizes on top
