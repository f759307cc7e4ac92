"""Energy above idle: a phase's board energy less what the board draws doing nothing.

Idle power is measured once before a run's first point (a short window with the engine quiet); each
phase window's energy, less idle power x the window's duration, divided by the runs it held (and by
its tokens), gives the energy the work itself added. A GPU that is busy all the same (another process
computing on it) has no idle power to measure: the record then says so instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ctxscope.agent.phases import DeviceBusy
from ctxscope.shared.messages import Metric

IDLE_SECONDS = 3.0
PHASES = ("prefill", "decode")


@dataclass(frozen=True)
class IdleReading:
    """Idle power, or why there is none although power is sampled (`absent`, for the record)."""

    power: Metric | None = None
    absent: str | None = None


def measure_idle(observer: object) -> IdleReading:
    """Idle power where the observer samples power (a telemetry session); a GPU that stayed busy
    (another process on it) gives no idle power and says why: energy above idle would be wrong."""
    meter = getattr(observer, "idle_power", None)
    if meter is None:
        return IdleReading()
    try:
        return IdleReading(power=meter(IDLE_SECONDS))
    except DeviceBusy as exc:
        return IdleReading(absent=f"not measured: the GPU was busy ({exc}); no energy above idle")


def above_idle(details: dict[str, Any], idle: Metric) -> dict[str, Metric]:
    """`<phase>_energy_above_idle` (J per run) and `..._per_token` from the observer's per-window
    records (`<phase>_windows`, each with start/end, tokens, repetitions and energy_j)."""
    idle_w = idle.median
    out: dict[str, Metric] = {}
    for phase in PHASES:
        windows = [w for w in details.get(f"{phase}_windows", []) if "energy_j" in w]
        if not windows:
            continue
        extra = [w["energy_j"] - idle_w * (w["end_ns"] - w["start_ns"]) / 1e9 for w in windows]
        method = f"window energy - idle power ({idle_w:.4g} W, median of idle_power) x window duration"
        out[f"{phase}_energy_above_idle"] = Metric(
            unit="J",
            method=f"{method}, / the window's repetitions: one {phase}",
            samples=[e / w["repetitions"] for e, w in zip(extra, windows, strict=True)],
        )
        if all(w["tokens"] > 0 for w in windows):
            out[f"{phase}_energy_above_idle_per_token"] = Metric(
                unit="J/token",
                method=f"{method}, / tokens in the window",
                samples=[e / w["tokens"] for e, w in zip(extra, windows, strict=True)],
            )
    return out
