"""Energy from sampled power: trapezoid integrals over phase windows and energy-counter deltas.

Power is treated as piecewise linear between samples (exact for such traces); the window edges are
interpolated from the samples around them. An edge with no sample within `max_gap_ns` outside it is
held constant from the nearest sample up to that gap, and beyond it the window is not measured
(None), never 0.
"""

from __future__ import annotations

import numpy as np


def _finite(t_ns: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ok = np.isfinite(values)
    return t_ns[ok].astype(np.int64), values[ok].astype(np.float64)


def _covers(t: np.ndarray, start_ns: int, end_ns: int, max_gap_ns: int) -> bool:
    return len(t) > 0 and t[0] <= start_ns + max_gap_ns and t[-1] >= end_ns - max_gap_ns and end_ns > start_ns


def integrate_j(
    t_ns: np.ndarray, power_w: np.ndarray, start_ns: int, end_ns: int, max_gap_ns: int
) -> float | None:
    """Joules in [start, end] from power samples (W) at monotonic ns; None if not covered."""
    t, p = _finite(t_ns, power_w)
    if not _covers(t, start_ns, end_ns, max_gap_ns):
        return None
    inside = (t > start_ns) & (t < end_ns)
    points = np.concatenate(([start_ns], t[inside], [end_ns])).astype(np.float64)
    # np.interp holds the end values outside the samples, which the gap check above bounds.
    watts = np.interp(points, t.astype(np.float64), p)
    return float(np.sum((watts[1:] + watts[:-1]) * np.diff(points)) / 2e9)


def counter_delta_j(
    t_ns: np.ndarray, counter_j: np.ndarray, start_ns: int, end_ns: int, max_gap_ns: int
) -> float | None:
    """Increase of a cumulative energy counter (J) over [start, end], interpolated at the edges."""
    t, c = _finite(t_ns, counter_j)
    if not _covers(t, start_ns, end_ns, max_gap_ns):
        return None
    edges = np.interp(np.array([start_ns, end_ns], dtype=np.float64), t.astype(np.float64), c)
    return float(edges[1] - edges[0])


def inside(t_ns: np.ndarray, values: np.ndarray, start_ns: int, end_ns: int) -> np.ndarray:
    """The finite samples taken within [start, end]."""
    t, v = _finite(t_ns, values)
    return v[(t >= start_ns) & (t <= end_ns)]
