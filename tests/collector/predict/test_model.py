"""Prediction against hand-computed cases: scaling per class, floors, host, band, range."""

from __future__ import annotations

import math

import pytest

from ctxscope.collector.predict.inputs import (
    ClassTime,
    DeviceRates,
    PredictionInputError,
    Rate,
    SourcePoint,
    rates_from_calibration,
    rates_from_peaks,
    source_points,
)
from ctxscope.collector.predict.model import (
    BAND_ASSUMED,
    BAND_BOTH_MEASURED,
    OutsideMeasuredRange,
    all_logits_ms,
    at_length,
    predict_curve,
    predict_point,
)


def rates(name: str, gemm: float, stream: float, status: str = "measured", **floors: float) -> DeviceRates:
    return DeviceRates(
        device=name,
        rates={
            "gemm": Rate(gemm, "TFLOP/s", status, "test"),  # type: ignore[arg-type]
            "stream": Rate(stream, "GB/s", status, "test"),  # type: ignore[arg-type]
        },
        **floors,
    )


def point(length: int = 1024, latency: float = 10.0, gemm: float = 6.0, stream: float = 3.0) -> SourcePoint:
    return SourcePoint(
        model="m",
        phase="prefill",
        context_len=length,
        runtime="transformers",
        scan="ssd_scan",
        classes={"gemm": ClassTime(gemm, 10), "elementwise": ClassTime(stream, 100)},
        latency_ms=latency,
        logits="last",
        precision="bf16",
    )


def test_device_bound_scales_each_class_by_its_family_ratio() -> None:
    source, target = rates("s", 1000, 4000), rates("t", 100, 100)
    p = predict_point(point(), source, target)
    # gemm 6 ms x (1000/100) = 60; elementwise 3 ms x (4000/100) = 120
    assert [c.target_ms for c in p.classes] == pytest.approx([60.0, 120.0])
    assert p.latency_ms == pytest.approx(180.0) and not p.host_bound and not p.lower_bound
    assert p.low_ms == pytest.approx(180.0 / BAND_BOTH_MEASURED)
    assert p.high_ms == pytest.approx(180.0 * BAND_BOTH_MEASURED)


def test_launch_floors_split_each_class() -> None:
    source = rates("s", 1000, 4000, launch_floor_ms=0.002)
    target = rates("t", 100, 100, launch_floor_ms=0.01)
    p = predict_point(point(), source, target)
    # gemm: 10 x 0.01 + (6 - 10 x 0.002) x 10 = 0.1 + 59.8; elementwise: 100 x 0.01 + (3 - 0.2) x 40 = 1 + 112
    assert [c.target_ms for c in p.classes] == pytest.approx([59.9, 113.0])


def test_band_combines_by_predicted_share() -> None:
    source = rates("s", 1000, 4000)
    target = rates("t", 100, 100)
    target.rates["stream"] = Rate(100, "GB/s", "assumed", "peak")
    p = predict_point(point(), source, target)
    # gemm 60 of 180 ms with both rates measured (1.25), elementwise 120 of 180 ms half assumed (2.0)
    expected = math.exp((60 * math.log(BAND_BOTH_MEASURED) + 120 * math.log(BAND_ASSUMED)) / 180)
    assert p.high_ms == pytest.approx(180 * expected)
    assert [c.status for c in p.classes] == ["measured", "assumed"]


def test_measured_against_assumed_uses_both_peaks() -> None:
    source = rates("s", 500, 2000)  # achieved rates, measured
    source.peaks = {
        "gemm": Rate(1000, "TFLOP/s", "assumed", "peak"),
        "stream": Rate(4000, "GB/s", "assumed", "p"),
    }
    target = rates_from_peaks("jetson-orin-nano-8gb")
    p = predict_point(point(), source, target)
    # peak / peak on both families: gemm 1000 / 10.2, stream 4000 / 68
    assert [c.factor for c in p.classes] == pytest.approx([1000 / 10.2, 4000 / 68])
    assert {c.status for c in p.classes} == {"assumed"}


def test_host_bound_source_without_target_host_cost_is_a_lower_bound() -> None:
    source, target = rates("s", 1000, 4000, "assumed"), rates("t", 1000, 4000, "assumed")
    p = predict_point(point(latency=30.0), source, target)  # device 9 ms of 30: host-bound
    assert p.lower_bound and p.high_ms is None and p.latency_ms == pytest.approx(9.0)
    assert p.low_ms == pytest.approx(9.0 / BAND_ASSUMED)


def test_host_bound_with_measured_host_costs_scales_the_latency() -> None:
    source = rates("s", 1000, 4000, host_per_op_ms=0.005)
    target = rates("t", 1000, 4000, host_per_op_ms=0.02)
    p = predict_point(point(latency=30.0), source, target)
    assert p.host_bound and p.host_ms == pytest.approx(120.0) and p.latency_ms == pytest.approx(120.0)
    assert not p.lower_bound


@pytest.mark.parametrize("host_per_op_ms", [None, 0.02])
def test_a_graph_replayed_target_has_no_host_term(host_per_op_ms: float | None) -> None:
    """The same host-bound source point, replayed from a CUDA graph on the target: the prediction is
    the device time with the class band, whether or not host costs were measured."""
    source = rates("s", 1000, 4000, launch_floor_ms=0.002, host_per_op_ms=0.005)
    target = rates("t", 1000, 4000, launch_floor_ms=0.001)
    target.host_per_op_ms = host_per_op_ms
    p = predict_point(point(latency=30.0), source, target, graph_replayed=True)
    # gemm: 10 x 0.001 + (6 - 0.02) = 5.99; elementwise: 100 x 0.001 + (3 - 0.2) = 2.9
    assert p.latency_ms == pytest.approx(8.89) and p.device_ms == pytest.approx(8.89)
    assert not p.host_bound and not p.lower_bound and p.host_ms == 0.0
    assert p.high_ms == pytest.approx(8.89 * BAND_BOTH_MEASURED)
    eager = predict_point(point(latency=30.0), source, target)
    assert eager.lower_bound if host_per_op_ms is None else eager.host_bound


def test_interpolates_log_log_inside_and_refuses_outside() -> None:
    source, target = rates("s", 100, 100), rates("t", 100, 100)
    curve = predict_curve([point(1024, 9.0, 6.0, 3.0), point(4096, 36.0, 24.0, 12.0)], source, target)
    mid = at_length(curve, 2048)
    assert mid.interpolated and mid.latency_ms == pytest.approx(18.0)  # sqrt(9 x 36)
    with pytest.raises(OutsideMeasuredRange, match=r"1024\.\.4096"):
        at_length(curve, 8192)
    with pytest.raises(OutsideMeasuredRange):
        at_length(curve, 512)


def test_all_logits_delta() -> None:
    target = rates("t", 10, 100)
    # 2 x 1023 x 1000 x 50000 FLOPs at 10 TFLOP/s = 10.23 ms
    assert all_logits_ms(1024, 1000, 50000, target) == pytest.approx(10.23)


def test_peaks_are_assumed_and_unknown_keys_fail() -> None:
    r = rates_from_peaks("jetson-orin-nano-8gb")
    assert r.rates["stream"].value == 68.0 and r.rates["gemm"].status == "assumed"
    assert not r.calibrated
    with pytest.raises(PredictionInputError, match="known"):
        rates_from_peaks("no-such-board")


def test_calibration_records_override_peaks() -> None:
    records = [
        {
            "kind": "run_started",
            "run_id": "c1",
            "ts": 1,
            "device": "t",
            "plan": {"calibrate": {}},
            "manifest": {},
        },
        {
            "kind": "result",
            "run_id": "c1",
            "outcome": "ok",
            "details": {"calibration": {"name": "gemm", "family": "gemm", "reference": False}},
            "metrics": {
                "calibration_rate": {"unit": "TFLOP/s", "method": "x", "samples": [11.0, 12.0, 13.0]}
            },
        },
        {
            "kind": "result",
            "run_id": "c1",
            "outcome": "ok",
            "details": {"calibration": {"name": "launch_floor", "family": "launch_floor"}},
            "metrics": {"calibration_time": {"unit": "ms", "method": "x", "samples": [0.004, 0.003, 0.005]}},
        },
    ]
    r = rates_from_calibration(records, fallback="jetson-orin-nano-8gb")
    assert r.rates["gemm"].value == 12.0 and r.rates["gemm"].status == "measured"
    assert r.rates["stream"].status == "assumed" and r.launch_floor_ms == 0.004 and r.calibrated
    with pytest.raises(PredictionInputError):
        rates_from_calibration(records[1:])


def _profile(length: int, latency: list[float], classes: dict[str, tuple[float, float]]) -> dict[str, object]:
    return {
        "kind": "result",
        "outcome": "ok",
        "model": "m",
        "context_len": length,
        "implementation": {"runtime": "transformers"},
        "metrics": {"profile_prefill_latency": {"unit": "ms", "method": "x", "samples": latency}},
        "details": {
            "operators": {
                "prefill": {
                    "passes": 1,
                    "classes": {c: {"time_ms": t, "kernels": k} for c, (t, k) in classes.items()},
                }
            }
        },
    }


def test_a_profile_that_is_not_plausible_is_no_source_point() -> None:
    """Source profiles come from a fleet device too: a non-positive latency, negative kernel time or
    count, or no kernel time at all would scale into zero or negative predictions (and logarithms of
    them between lengths)."""
    records = [
        _profile(1024, [10.0], {"gemm": (6.0, 10), "elementwise": (3.0, 100)}),
        _profile(2048, [0.0], {"gemm": (6.0, 10)}),
        _profile(4096, [10.0], {"gemm": (-6.0, 10), "elementwise": (30.0, 100)}),
        _profile(8192, [10.0], {"gemm": (6.0, -1)}),
        _profile(16384, [10.0], {"gemm": (0.0, 10)}),
    ]
    assert [p.context_len for p in source_points(records)] == [1024]


def test_a_calibration_figure_that_is_not_positive_stops_the_prediction_with_a_reason() -> None:
    started = {"kind": "run_started", "run_id": "c1", "ts": 1, "device": "t", "plan": {"calibrate": {}}}
    for name, metric in (("gemm", "calibration_rate"), ("launch_floor", "calibration_time")):
        result = {
            "kind": "result",
            "run_id": "c1",
            "outcome": "ok",
            "details": {"calibration": {"name": name, "family": name}},
            "metrics": {metric: {"unit": "TFLOP/s", "method": "x", "samples": [0.0, -1.0, 0.0]}},
        }
        with pytest.raises(PredictionInputError, match=f"{name} = 0 TFLOP/s, not a positive figure"):
            rates_from_calibration([started, result])
