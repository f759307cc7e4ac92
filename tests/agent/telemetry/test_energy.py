"""Energy integration and counter deltas on synthetic traces with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctxscope.agent.telemetry.energy import counter_delta_j, inside, integrate_j

S = 1_000_000_000


def test_constant_power_over_two_seconds():
    t = np.arange(0, 3 * S + 1, S // 20)
    p = np.full(len(t), 100.0)
    assert integrate_j(t, p, S // 2, S // 2 + 2 * S, S // 10) == pytest.approx(200.0)


def test_ramp_with_edges_between_samples():
    # P(t) = 10 t (W, t in s), sampled at 10 Hz; the integral from 0.25 s to 1.55 s is 5 (1.55^2 - 0.25^2).
    t = np.arange(0, 2 * S + 1, S // 10)
    p = 10.0 * t / S
    assert integrate_j(t, p, S // 4, 155 * S // 100, S // 5) == pytest.approx(5 * (1.55**2 - 0.25**2))


def test_step_is_resolved_to_the_sampling_period():
    t = np.arange(0, 2 * S + 1, S // 20)
    p = np.where(t < S, 50.0, 150.0)
    energy = integrate_j(t, p, 0, 2 * S, S // 10)
    assert energy == pytest.approx(200.0, abs=100.0 * 0.05)  # one 50 ms ramp of error at the step


def test_missing_samples_are_skipped_not_zeroed():
    t = np.arange(0, 2 * S + 1, S // 10)
    p = np.full(len(t), 40.0)
    p[5:8] = np.nan
    assert integrate_j(t, p, 0, 2 * S, S // 5) == pytest.approx(80.0)


def test_window_outside_the_samples_is_not_measured():
    t = np.arange(0, S + 1, S // 10)
    p = np.full(len(t), 10.0)
    assert integrate_j(t, p, 2 * S, 3 * S, S // 10) is None
    assert integrate_j(t, p, S // 2, 2 * S, S // 10) is None
    assert integrate_j(t, np.full(len(t), np.nan), 0, S, S // 10) is None
    assert counter_delta_j(t, p, 2 * S, 3 * S, S // 10) is None


def test_counter_delta_interpolates_the_edges():
    t = np.arange(0, 3 * S + 1, S // 4)
    counter = 1000.0 + 30.0 * t / S  # 30 W
    assert counter_delta_j(t, counter, S // 3, 2 * S, S // 4) == pytest.approx(30.0 * (2 - 1 / 3))


def test_inside_keeps_finite_samples_of_the_window():
    t = np.array([0, 1, 2, 3, 4]) * S
    v = np.array([1.0, np.nan, 3.0, 4.0, 5.0])
    assert inside(t, v, S, 3 * S).tolist() == [3.0, 4.0]


@settings(max_examples=60, deadline=None)
@given(
    watts=st.lists(st.floats(min_value=0, max_value=1000), min_size=3, max_size=40),
    start_frac=st.floats(min_value=0, max_value=0.4),
    end_frac=st.floats(min_value=0.6, max_value=1.0),
)
def test_trapezoid_is_exact_for_piecewise_linear_power(watts, start_frac, end_frac):
    t = np.arange(len(watts), dtype=np.int64) * (S // 20)
    p = np.asarray(watts)
    start = int(t[-1] * start_frac)
    end = int(t[-1] * end_frac)
    if end <= start:
        return
    fine = np.linspace(start, end, 20001)
    reference = np.trapezoid(np.interp(fine, t, p), fine) / S
    got = integrate_j(t, p, start, end, S // 20)
    assert got == pytest.approx(reference, rel=1e-4, abs=1e-3)
