"""Decode points report the bytes a token must read, the bandwidth-bound floor and the fraction reached."""

from __future__ import annotations

import pytest
import torch

from ctxscope.agent.engine import bandwidth, point


def test_cpu_bandwidth_is_measured_and_labelled() -> None:
    measured = bandwidth.measure(torch.device("cpu"))
    assert measured.bytes_per_s > 1e8  # any machine copies faster than 100 MB/s
    assert "not a GPU figure" in measured.method


def test_decode_point_reports_its_floor() -> None:
    session = point.Session(point.ModelChoice(name="qwen2.5-0.5b", precision="fp32", device="cpu", tiny=True))
    policy = point.LoopPolicy(warmups=0, min_reps=2, max_reps=2, min_time_s=0.0)
    outcome = point.measure_point(
        session, point.PointSettings(context_len=16, decode_tokens=2, policy=policy)
    )
    metrics = outcome.metrics
    read = session.loaded.weight_bytes + session.cache_bytes_per_token * 16 + session.state_bytes
    assert metrics["decode_bytes_per_token"].samples == [float(read)]
    floor_ms = read / metrics["memory_bandwidth"].samples[0] * 1e3
    assert metrics["decode_floor"].samples == [pytest.approx(floor_ms)]
    per_token = metrics["decode_per_token"].samples
    fractions = metrics["decode_floor_fraction"].samples
    assert fractions == [pytest.approx(floor_ms / ms) for ms in per_token]
    assert all(0 < f < 1 for f in fractions)
