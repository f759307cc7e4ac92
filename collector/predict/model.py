"""Scale a measured device's per-class device time to a target and attach an uncertainty band.

Per class c of a profiled point with device time t_c over k_c kernels:

    t'_c = k_c * floor' + max(0, t_c - k_c * floor) * rate_f(source) / rate_f(target)

where f is the class's kernel family (both rates calibrated, else both stated peaks) and the floor
term applies only when both launch floors were measured. Device time is the sum of t'_c. Host time,
when the source was host-bound (device busy below 90% of its timed latency) and both host costs per
eager op were measured, is the source latency scaled by the ratio of host costs; the prediction is
the larger of the two. Without a target host cost, a point whose source was host-bound is only a
lower bound. A target that replays the step as a CUDA graph (`graph_replayed`: decode on a graph path,
the same kernels without a host launching each) has no host term: its prediction is the device time,
with the floor term standing for the gaps between the replayed kernels.

The band is multiplicative per class (1.25 with both rates calibrated, 2 otherwise), combined by
predicted share: exp(sum_c share_c * ln b_c). No constant here is fitted to measured latencies.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Any

from ctxscope.collector.predict.inputs import DeviceRates, PredictionInputError, Rate, SourcePoint, family_of

# Band factor by how the family's source and target rates are known (PREDICTION.md, design notes):
BAND_BOTH_MEASURED = 1.25  # per-family calibrated: +-15-25%
BAND_ASSUMED = 2.0  # from stated peaks only: about x/÷2
BAND_HOST = 1.3  # host time scaled by measured host costs
HOST_BOUND_BUSY = 0.9  # source busy fraction below which the source counts as host-bound


@dataclass(frozen=True)
class ClassPrediction:
    cls: str
    family: str
    source_ms: float
    target_ms: float
    factor: float  # rate(source) / rate(target)
    band: float
    status: str  # measured | assumed (both rates measured, or not)


@dataclass(frozen=True)
class Prediction:
    model: str
    phase: str
    runtime: str
    context_len: int
    latency_ms: float
    low_ms: float
    high_ms: float | None  # None: lower bound only
    device_ms: float
    host_ms: float | None
    host_bound: bool
    lower_bound: bool
    interpolated: bool
    classes: list[ClassPrediction] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "phase": self.phase,
            "runtime": self.runtime,
            "context_len": self.context_len,
            "latency_ms": self.latency_ms,
            "low_ms": self.low_ms,
            "high_ms": self.high_ms,
            "device_ms": self.device_ms,
            "host_ms": self.host_ms,
            "host_bound": self.host_bound,
            "lower_bound": self.lower_bound,
            "interpolated": self.interpolated,
            "classes": [c.__dict__ for c in self.classes],
        }


class OutsideMeasuredRange(ValueError):
    """A length outside the lengths the source measured: no extrapolation."""


def family_rates(source: DeviceRates, target: DeviceRates, family: str) -> tuple[Rate, Rate, float, str]:
    """The two rates a class is scaled by, its band and status. Both measured: the calibrations.
    Otherwise a measured (achieved) rate against an assumed (stated peak) one would mix two bases, so
    both sides' stated peaks are used where the peak table has them; all of that is assumed."""
    s, t = source.rates[family], target.rates[family]
    if s.status == "measured" and t.status == "measured":
        return s, t, BAND_BOTH_MEASURED, "measured"
    if s.status != t.status and family in source.peaks and family in target.peaks:
        s, t = source.peaks[family], target.peaks[family]
    return s, t, BAND_ASSUMED, "assumed"


def predict_point(
    point: SourcePoint, source: DeviceRates, target: DeviceRates, graph_replayed: bool = False
) -> Prediction:
    """The target's latency for one profiled point of the source; `graph_replayed` when the target
    replays the point's kernels as a CUDA graph (no host cost per op)."""
    floors = source.launch_floor_ms is not None and target.launch_floor_ms is not None
    classes: list[ClassPrediction] = []
    for cls, ct in point.classes.items():
        family = family_of(cls, point.scan)
        if family not in source.rates or family not in target.rates:
            side = source.device if family not in source.rates else target.device
            raise PredictionInputError(f"no {family} rate for {side} (not calibrated, no peak table entry)")
        s_rate, t_rate, band, status = family_rates(source, target, family)
        factor = s_rate.value / t_rate.value
        if floors:
            assert source.launch_floor_ms is not None and target.launch_floor_ms is not None
            work = max(0.0, ct.time_ms - ct.kernels * source.launch_floor_ms)
            t = ct.kernels * target.launch_floor_ms + work * factor
        else:
            t = ct.time_ms * factor
        classes.append(ClassPrediction(cls, family, ct.time_ms, t, factor, band, status))
    device = sum(c.target_ms for c in classes)
    log_band = sum(c.target_ms * math.log(c.band) for c in classes) / device if device > 0 else 0.0
    band = math.exp(log_band)
    source_host_bound = point.device_ms < HOST_BOUND_BUSY * point.latency_ms and not graph_replayed
    host: float | None = None
    if graph_replayed:
        host = 0.0
    elif source.host_per_op_ms and target.host_per_op_ms:
        host = point.latency_ms * target.host_per_op_ms / source.host_per_op_ms if source_host_bound else 0.0
    host_bound = host is not None and host > device
    latency = max(device, host or 0.0)
    if host_bound:
        band = BAND_HOST
    lower_bound = source_host_bound and host is None
    return Prediction(
        model=point.model,
        phase=point.phase,
        runtime=point.runtime,
        context_len=point.context_len,
        latency_ms=latency,
        low_ms=latency / band,
        high_ms=None if lower_bound else latency * band,
        device_ms=device,
        host_ms=host,
        host_bound=host_bound,
        lower_bound=lower_bound,
        interpolated=False,
        classes=classes,
    )


def predict_curve(
    points: list[SourcePoint], source: DeviceRates, target: DeviceRates, graph_replayed: bool = False
) -> list[Prediction]:
    """Predictions at every measured length of each (model, phase, runtime)."""
    return [predict_point(p, source, target, graph_replayed) for p in points]


def at_length(curve: list[Prediction], length: int) -> Prediction:
    """A prediction at `length`: exact, or log-log interpolated between the two neighbouring measured
    lengths of one curve (same model, phase, runtime). Outside them: OutsideMeasuredRange."""
    curve = sorted(curve, key=lambda p: p.context_len)
    lengths = [p.context_len for p in curve]
    if not curve or length < lengths[0] or length > lengths[-1]:
        span = f"{lengths[0]}..{lengths[-1]}" if curve else "none"
        raise OutsideMeasuredRange(f"{length} tokens is outside the measured lengths ({span})")
    i = bisect.bisect_left(lengths, length)
    if lengths[i] == length:
        return curve[i]
    a, b = curve[i - 1], curve[i]
    w = math.log(length / a.context_len) / math.log(b.context_len / a.context_len)

    def mix(x: float, y: float) -> float:
        return math.exp((1 - w) * math.log(x) + w * math.log(y))

    high = mix(a.high_ms, b.high_ms) if a.high_ms is not None and b.high_ms is not None else None
    return Prediction(
        model=a.model,
        phase=a.phase,
        runtime=a.runtime,
        context_len=length,
        latency_ms=mix(a.latency_ms, b.latency_ms),
        low_ms=mix(a.low_ms, b.low_ms),
        high_ms=high,
        device_ms=mix(a.device_ms, b.device_ms),
        host_ms=mix(a.host_ms, b.host_ms) if a.host_ms and b.host_ms else None,
        host_bound=a.host_bound or b.host_bound,
        lower_bound=a.lower_bound or b.lower_bound,
        interpolated=True,
    )


def all_logits_ms(context_len: int, hidden: int, vocab: int, target: DeviceRates) -> float:
    """Analytic delta for logits at every position instead of the last one: the extra lm_head GEMM
    work (2 * (L - 1) * hidden * vocab FLOPs) at the target's GEMM rate."""
    rate = target.rates["gemm"]
    return 2.0 * (context_len - 1) * hidden * vocab / (rate.value * 1e12) * 1e3
