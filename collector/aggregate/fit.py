"""Least-squares scaling fits y = a + bL + cL^2 and the length at which a fit reaches a capacity."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class QuadraticFit:
    """y = a + b L + c L^2 over lengths in tokens, y in `unit`; `rms_residual` in `unit` too."""

    a: float
    b: float
    c: float
    unit: str
    rms_residual: float
    n_points: int
    min_length_tokens: int
    max_length_tokens: int

    def __call__(self, length_tokens: float) -> float:
        return self.a + self.b * length_tokens + self.c * length_tokens**2

    def length_at(self, capacity: float) -> float | None:
        """Smallest length beyond the measured range's start at which the fit reaches `capacity`
        (same unit), or None when it never does (flat or decreasing fit)."""
        a, b, c = self.a - capacity, self.b, self.c
        if abs(c) < 1e-300:
            roots = [-a / b] if b != 0 else []
        else:
            disc = b * b - 4 * c * a
            if disc < 0:
                return None
            sq = math.sqrt(disc)
            # The numerically stable pair of quadratic roots.
            q = -0.5 * (b + math.copysign(sq, b))
            roots = [q / c] + ([a / q] if q != 0 else [])
        ahead = sorted(r for r in roots if r >= self.min_length_tokens)
        return ahead[0] if ahead else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b_per_token": self.b,
            "c_per_token2": self.c,
            "unit": self.unit,
            "rms_residual": self.rms_residual,
            "n_points": self.n_points,
            "min_length_tokens": self.min_length_tokens,
            "max_length_tokens": self.max_length_tokens,
        }


def fit_quadratic(lengths: Sequence[int], values: Sequence[float], unit: str) -> QuadraticFit | None:
    """Fit a + bL + cL^2 by least squares; needs three distinct lengths, else None. None too where the
    values are so large that the fit overflows (a device may send any finite number)."""
    if len(set(lengths)) < 3:
        return None
    x = np.asarray(lengths, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    # Scale L so the design matrix stays well conditioned at 10^5..10^6 tokens.
    scale = float(x.max())
    design = np.stack([np.ones_like(x), x / scale, (x / scale) ** 2], axis=1)
    with np.errstate(over="ignore", invalid="ignore"):
        coef, *_ = np.linalg.lstsq(design, y, rcond=None)
        residual = y - design @ coef
        rms = np.sqrt(np.mean(residual**2))
    if not (np.all(np.isfinite(coef)) and np.isfinite(rms)):
        return None
    return QuadraticFit(
        a=float(coef[0]),
        b=float(coef[1] / scale),
        c=float(coef[2] / scale**2),
        unit=unit,
        rms_residual=float(rms),
        n_points=int(x.size),
        min_length_tokens=int(x.min()),
        max_length_tokens=int(x.max()),
    )
