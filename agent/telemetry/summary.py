"""Phase windows -> metrics: energy, J/token, power, temperatures, clocks, throttling, counter check.

Per phase name `p` (all windows of that phase in one Metric, one sample per window):
`p_energy` (J, of one run of the phase: a window of k back-to-back runs is divided by k),
`p_energy_per_token` (J/token), `p_power_mean` and `p_power_peak` (W),
`p_temp_max_<sensor>` (C), `p_clock_gpu_min` (MHz) and, where a hardware counter exists,
`p_energy_counter` (J) with the relative difference to the integral in details. Flags per phase:
`p_throttle_power_cap`, `p_throttle_thermal`, `p_throttle_hw_slowdown` (engaged in any sample),
`p_clock_drop` (GPU clock fell more than X% below its value at the window's start) and
`p_undersampled` (a window held fewer power samples than asked). What was not measured is absent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ctxscope.agent.phases import PhaseReport, PhaseWindow
from ctxscope.agent.telemetry.base import Backend
from ctxscope.agent.telemetry.energy import counter_delta_j, inside, integrate_j
from ctxscope.agent.telemetry.ring import SampleRing
from ctxscope.shared.messages import Metric

_THROTTLES = ("throttle_power_cap", "throttle_thermal", "throttle_hw_slowdown")


def _gap_ns(rate_hz: float) -> int:
    """How far a window edge may sit from the nearest sample: one and a half sampling periods."""
    return int(1.5e9 / rate_hz)


def _power_method(backends: Sequence[Backend], rates: dict[str, float]) -> str:
    parts = [f"{b.name}: {b.power_method} at {rates[b.name]:g} Hz" for b in backends]
    return "; ".join(parts)


def _per_run(phase: str, repetitions: set[int]) -> str:
    """How a window's energy became one sample: itself, or divided by the runs it held."""
    if repetitions <= {1}:
        return f"; one {phase} per window"
    ks = "/".join(map(str, sorted(repetitions)))
    return f" / the window's repetitions: energy of one {phase} (windows of {ks} back-to-back runs)"


@dataclass
class _Acc:
    """Per-phase collections, one entry per window."""

    energy: list[float] = field(default_factory=list)
    per_token: list[float] = field(default_factory=list)
    power_mean: list[float] = field(default_factory=list)
    counter: list[float] = field(default_factory=list)
    temps: dict[str, list[float]] = field(default_factory=dict)
    clock_min: list[float] = field(default_factory=list)
    flags: dict[str, bool] = field(default_factory=dict)
    windows: list[dict[str, Any]] = field(default_factory=list)
    repetitions: set[int] = field(default_factory=set)


class WindowSummarizer:
    def __init__(
        self,
        ring: SampleRing,
        backends: Sequence[Backend],
        rates: dict[str, float],
        min_samples: int,
        clock_drop_pct: float,
    ) -> None:
        self.ring = ring
        self.backends = list(backends)
        self.rates = rates
        self.min_samples = min_samples
        self.clock_drop_pct = clock_drop_pct
        self.power_backends = [b for b in self.backends if "power_w" in b.metrics()]
        self.counter_backends = [b for b in self.power_backends if "energy_j" in b.metrics()]

    def report(self, windows: Sequence[PhaseWindow]) -> PhaseReport:
        phases: dict[str, _Acc] = {}
        for window in windows:
            self._window(window, phases.setdefault(window.name, _Acc()))
        report = PhaseReport()
        method = _power_method(self.power_backends, self.rates)
        for name, acc in phases.items():
            self._metrics(name, acc, method, report)
        report.details["telemetry"] = {
            "sources": {b.name: {"rate_hz": self.rates[b.name], **b.info()} for b in self.backends},
            "power_method": method or None,
        }
        return report

    def _window(self, w: PhaseWindow, acc: _Acc) -> None:
        record: dict[str, Any] = {
            "start_ns": w.start_ns,
            "end_ns": w.end_ns,
            "tokens": w.tokens,
            "repetitions": w.repetitions,
        }
        energy = self._energy(w, record)
        if energy is not None and w.end_ns > w.start_ns:
            acc.energy.append(energy / w.repetitions)  # one run of the phase, not the whole window
            acc.repetitions.add(w.repetitions)
            acc.power_mean.append(energy / w.duration_s)
            if w.tokens > 0:
                acc.per_token.append(energy / w.tokens)
        counter = self._counter(w)
        if counter is not None:
            acc.counter.append(counter / w.repetitions)
            record["energy_counter_j"] = counter
            if energy is not None and counter > 0:
                record["energy_rel_diff"] = (energy - counter) / counter
        for backend in self.backends:
            self._conditions(backend, w, acc)
        acc.windows.append(record)

    def _energy(self, w: PhaseWindow, record: dict[str, Any]) -> float | None:
        if not self.power_backends:
            return None
        total = 0.0
        samples = []
        peak = None
        for b in self.power_backends:
            chunk = self.ring.window(b.name, w.start_ns, w.end_ns)
            if chunk is None:
                return None
            joules = integrate_j(
                chunk.t_ns, chunk.channels["power_w"], w.start_ns, w.end_ns, _gap_ns(self.rates[b.name])
            )
            if joules is None:
                return None
            total += joules
            within = inside(chunk.t_ns, chunk.channels["power_w"], w.start_ns, w.end_ns)
            samples.append(len(within))
            if len(within):
                peak = (peak or 0.0) + float(within.max())
        record["power_samples"] = min(samples)
        record["energy_j"] = total
        if peak is not None:
            record["power_peak_w"] = peak
        return total

    def _counter(self, w: PhaseWindow) -> float | None:
        if not self.counter_backends or len(self.counter_backends) != len(self.power_backends):
            return None
        total = 0.0
        for b in self.counter_backends:
            chunk = self.ring.window(b.name, w.start_ns, w.end_ns)
            delta = (
                None
                if chunk is None
                else counter_delta_j(
                    chunk.t_ns, chunk.channels["energy_j"], w.start_ns, w.end_ns, _gap_ns(self.rates[b.name])
                )
            )
            if delta is None:
                return None
            total += delta
        return total

    def _conditions(self, b: Backend, w: PhaseWindow, acc: _Acc) -> None:
        chunk = self.ring.window(b.name, w.start_ns, w.end_ns)
        if chunk is None:
            return
        for channel, values in chunk.channels.items():
            within = inside(chunk.t_ns, values, w.start_ns, w.end_ns)
            if not len(within):
                continue
            if channel.startswith("temp_"):
                sensor = channel.removeprefix("temp_").removesuffix("_c")
                key = (
                    sensor
                    if len(self.backends) == 1 or b.name == self.backends[0].name
                    else f"{b.name}_{sensor}"
                )
                acc.temps.setdefault(key, []).append(float(within.max()))
            elif channel in _THROTTLES:
                acc.flags[channel] = acc.flags.get(channel, False) or bool(within.max() > 0)
            elif channel == "clock_gpu_mhz" and b in self.power_backends:
                acc.clock_min.append(float(within.min()))
                dropped = within.min() < within[0] * (1 - self.clock_drop_pct / 100)
                acc.flags["clock_drop"] = acc.flags.get("clock_drop", False) or bool(dropped)

    def _metrics(self, phase: str, acc: _Acc, method: str, report: PhaseReport) -> None:
        m = report.metrics
        integral = f"trapezoid integral of power over each {phase} window ({method})"
        per_run = _per_run(phase, acc.repetitions)
        if acc.energy:
            m[f"{phase}_energy"] = Metric(unit="J", method=f"{integral}{per_run}", samples=acc.energy)
            m[f"{phase}_power_mean"] = Metric(
                unit="W", method=f"window energy / window duration; {method}", samples=acc.power_mean
            )
        if acc.per_token:
            m[f"{phase}_energy_per_token"] = Metric(
                unit="J/token", method=f"{integral} / tokens in the window", samples=acc.per_token
            )
        peaks = [r["power_peak_w"] for r in acc.windows if "power_peak_w" in r]
        if peaks:
            m[f"{phase}_power_peak"] = Metric(
                unit="W",
                method=(
                    f"largest power sample in each window; {method}"
                    if len(self.power_backends) == 1
                    else f"sum of each of {len(self.power_backends)} sources' largest sample in each window "
                    f"(an upper bound of the total's peak); {method}"
                ),
                samples=peaks,
            )
        if acc.counter:
            names = ", ".join(b.name for b in self.counter_backends)
            m[f"{phase}_energy_counter"] = Metric(
                unit="J",
                method=f"hardware energy counter delta over each window ({names}){per_run}, cross-checks "
                "the integral",
                samples=acc.counter,
            )
        for sensor, values in acc.temps.items():
            m[f"{phase}_temp_max_{sensor}"] = Metric(
                unit="C", method="largest temperature sample in each window", samples=values
            )
        if acc.clock_min:
            m[f"{phase}_clock_gpu_min"] = Metric(
                unit="MHz", method="smallest GPU clock sample in each window", samples=acc.clock_min
            )
        for flag, value in acc.flags.items():
            report.flags[f"{phase}_{flag}"] = value
        counts = [r["power_samples"] for r in acc.windows if "power_samples" in r]
        if counts:
            report.flags[f"{phase}_undersampled"] = min(counts) < self.min_samples
        diffs = [r["energy_rel_diff"] for r in acc.windows if "energy_rel_diff" in r]
        if diffs:
            report.details[f"{phase}_energy_rel_diff"] = diffs
        report.details[f"{phase}_windows"] = acc.windows


IDLE_UTIL_MAX_PCT = 10.0  # mean GPU utilization above which an "idle" window is not idle


def busy_during(ring: SampleRing, backends: Sequence[Backend], start_ns: int, end_ns: int) -> str | None:
    """Why the GPU was not idle in [start, end] (another process computing on it, say), or None: a
    GPU utilization channel (`util_gpu_pct`: NVML, jtop, tegrastats) whose mean exceeds
    IDLE_UTIL_MAX_PCT. A source without one cannot tell, and None is returned for it."""
    for backend in backends:
        chunk = ring.window(backend.name, start_ns, end_ns)
        if chunk is None or "util_gpu_pct" not in chunk.channels:
            continue
        values = chunk.channels["util_gpu_pct"][(chunk.t_ns >= start_ns) & (chunk.t_ns <= end_ns)]
        values = values[np.isfinite(values)]
        if len(values) and float(values.mean()) > IDLE_UTIL_MAX_PCT:
            return (
                f"GPU utilization {float(values.mean()):.0f}% on average (up to {float(values.max()):.0f}%, "
                f"{backend.name}) while nothing of this run ran"
            )
    return None


def idle_metric(
    ring: SampleRing, power_backends: Sequence[Backend], start_ns: int, end_ns: int, rates: dict[str, float]
) -> Metric | None:
    """Idle power over [start, end] as the power samples taken in it (summed across sources)."""
    if not power_backends:
        return None
    first = ring.window(power_backends[0].name, start_ns, end_ns)
    if first is None:
        return None
    t_first = first.t_ns[(first.t_ns >= start_ns) & (first.t_ns <= end_ns)]
    total = np.zeros(len(t_first))
    for b in power_backends:
        chunk = ring.window(b.name, start_ns, end_ns)
        if chunk is None:
            return None
        ok = np.isfinite(chunk.channels["power_w"])
        if not ok.any():
            return None
        total += np.interp(t_first, chunk.t_ns[ok].astype(np.float64), chunk.channels["power_w"][ok])
    if not len(total):
        return None
    seconds = (end_ns - start_ns) / 1e9
    return Metric(
        unit="W",
        method=f"power samples while idle for {seconds:.1f} s ({_power_method(power_backends, rates)})",
        samples=[float(x) for x in total],
    )
