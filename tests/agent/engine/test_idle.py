"""Energy above idle: window energy less idle power x duration, per run and per token."""

from __future__ import annotations

import pytest

from ctxscope.agent.engine import idle
from ctxscope.shared.messages import Metric


def test_above_idle_per_run_and_per_token() -> None:
    idle_power = Metric(unit="W", method="idle samples", samples=[100.0, 120.0, 140.0])
    details = {
        "prefill_windows": [
            {"start_ns": 0, "end_ns": 2_000_000_000, "tokens": 8192, "repetitions": 2, "energy_j": 1000.0},
        ],
        "decode_windows": [{"start_ns": 0, "end_ns": 500_000_000, "tokens": 32, "repetitions": 32}],
    }
    metrics = idle.above_idle(details, idle_power)
    # 1000 J over 2 s less 120 W x 2 s = 760 J for two prefills
    assert metrics["prefill_energy_above_idle"].samples == [pytest.approx(380.0)]
    assert metrics["prefill_energy_above_idle_per_token"].samples == [pytest.approx(760.0 / 8192)]
    assert "120 W" in metrics["prefill_energy_above_idle"].method
    assert "one prefill" in metrics["prefill_energy_above_idle"].method
    assert not any(k.startswith("decode") for k in metrics)  # no energy measured: absent, not zero


def test_no_power_sampling_no_idle() -> None:
    assert idle.measure_idle(object()) == idle.IdleReading()
