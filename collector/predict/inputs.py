"""What prediction reads: per-class device time of a measured device's profiled points, and a
device's rates per kernel family (from its calibration records, or assumed from the peak table)."""

from __future__ import annotations

import functools
import json
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from ctxscope.collector.aggregate.units import canonical

Status = Literal["measured", "assumed"]

# Kernel family of each profiler class; the family's rate scales the class.
CLASS_FAMILY: dict[str, str] = {
    "gemm": "gemm",
    "lm_head": "gemm",
    "attention": "attention",
    "conv1d": "stream",
    "elementwise": "stream",
    "norm": "stream",
    "rotary": "stream",
    "memcpy_memset": "stream",
    "other": "stream",
}
# Rate unit per family: bigger is faster for every one of them.
FAMILY_UNIT = {
    "gemm": "TFLOP/s",
    "attention": "TFLOP/s",
    "ssd_scan": "TFLOP/s",
    "stream": "GB/s",
    "selective_scan": "GB/s",
}
# Which peak stands in for a family when the device was not calibrated.
PEAK_OF_FAMILY = {
    "gemm": "bf16_tflops",
    "attention": "bf16_tflops",
    "ssd_scan": "bf16_tflops",
    "stream": "memory_gb_s",
    "selective_scan": "memory_gb_s",
}


class PredictionInputError(ValueError):
    """Records that cannot serve as a source or a target."""


@dataclass(frozen=True)
class Rate:
    value: float
    unit: str
    status: Status
    how: str


@dataclass
class DeviceRates:
    """A device's rate per kernel family, its launch floor and host cost per eager op (ms)."""

    device: str
    rates: dict[str, Rate] = field(default_factory=dict)
    peaks: dict[str, Rate] = field(default_factory=dict)  # the peak table's entry, where known
    launch_floor_ms: float | None = None
    host_per_op_ms: float | None = None
    reference: bool = False  # CPU reference figures: not a GPU's kernels
    operating_point: dict[str, Any] = field(default_factory=dict)

    @property
    def calibrated(self) -> bool:
        return any(r.status == "measured" for r in self.rates.values())


def scan_family(model: str, implementation: Mapping[str, str]) -> str:
    """Selective scan (Mamba-1) or SSD chunk scan (Mamba-2 and the hybrids built on it)."""
    text = " ".join(implementation.values()).lower()
    if "selective_scan" in text and "chunk" not in text:
        return "selective_scan"
    if "chunk" in text or "ssd" in text or "mamba2" in model or "falcon" in model or "zamba" in model:
        return "ssd_scan"
    return "selective_scan"


def family_of(cls: str, scan: str) -> str:
    return scan if cls == "ssm_scan" else CLASS_FAMILY.get(cls, "stream")


@functools.cache
def peak_table() -> dict[str, dict[str, Any]]:
    """The packaged peak table (read once; callers only read it)."""
    text = resources.files("ctxscope.agent.profiling").joinpath("peaks.json").read_text()
    devices: dict[str, dict[str, Any]] = json.loads(text)["devices"]
    return devices


def rates_from_peaks(key: str) -> DeviceRates:
    """Every family assumed to run at the device's stated peak; floors unknown."""
    table = peak_table()
    if key not in table:
        raise PredictionInputError(f"no peak table entry {key!r}; known: {', '.join(table)}")
    entry = table[key]
    rates = {
        family: Rate(
            float(entry[peak]),
            FAMILY_UNIT[family],
            "assumed",
            f"stated peak {peak} of {key} ({entry['source'][:80]})",
        )
        for family, peak in PEAK_OF_FAMILY.items()
    }
    return DeviceRates(device=key, rates=rates, peaks=dict(rates))


def rates_from_calibration(
    records: Iterable[Mapping[str, Any]], *, fallback: str | None = None
) -> DeviceRates:
    """Rates from one device's latest calibration run; families it lacks come from `fallback`'s peaks."""
    records = list(records)
    runs = [r for r in records if r.get("kind") == "run_started" and "calibrate" in r.get("plan", {})]
    if not runs:
        raise PredictionInputError("no calibration run in these records")
    run = max(runs, key=lambda r: r.get("ts", 0))
    base = rates_from_peaks(fallback) if fallback else DeviceRates(device=str(run.get("device")))
    out = DeviceRates(device=str(run.get("device")), rates=dict(base.rates), peaks=dict(base.peaks))
    operating_point = (run.get("manifest") or {}).get("operating_point")
    out.operating_point = dict(operating_point) if isinstance(operating_point, dict) else {}
    for r in records:
        if r.get("kind") != "result" or r.get("run_id") != run["run_id"] or r.get("outcome") != "ok":
            continue
        info = _shaped(_CALIBRATION, (r.get("details") or {}).get("calibration"))
        if info is None:  # free-form on the wire: a result of another shape is no calibration figure
            continue
        metrics = r.get("metrics", {})
        name = info.name
        out.reference = out.reference or info.reference
        if name in ("launch_floor", "host_per_op") and "calibration_time" in metrics:
            value = _positive(out.device, name, metrics["calibration_time"])
            if name == "launch_floor":
                out.launch_floor_ms = value
            else:
                out.host_per_op_ms = value
        elif "calibration_rate" in metrics:
            family = info.family
            rate = metrics["calibration_rate"]
            samples = rate["samples"]
            out.rates[family] = Rate(
                _positive(out.device, name, rate),
                rate["unit"],
                "measured",
                f"{name}: median of {len(samples)} ({min(samples):.4g}..{max(samples):.4g})",
            )
    return out


Finite = Annotated[float, Field(allow_inf_nan=False)]
_T = TypeVar("_T")


class _CalibrationFigure(BaseModel):
    """A calibration result's `details.calibration`."""

    model_config = ConfigDict(extra="ignore")
    name: str
    family: str = ""
    reference: bool = False


class _ClassFigures(BaseModel):
    """One operator class of a profiled phase: device time and kernel count over all passes."""

    model_config = ConfigDict(extra="ignore")
    time_ms: Finite
    kernels: Finite


class _PhaseOperators(BaseModel):
    """One phase of a profile result's `details.operators`, as `ctxscope agent profile` writes it."""

    model_config = ConfigDict(extra="ignore")
    passes: int = 1
    classes: dict[str, _ClassFigures]


_CALIBRATION = TypeAdapter(_CalibrationFigure)
_OPERATORS = TypeAdapter(dict[str, _PhaseOperators])


def _shaped(adapter: TypeAdapter[_T], value: Any) -> _T | None:
    """`value`, a free-form part of a record (a device may send any shape), as `adapter`'s type, or
    None where it has another shape."""
    try:
        return adapter.validate_python(value)
    except ValidationError:
        return None


def _positive(device: str, name: str, metric: Mapping[str, Any]) -> float:
    """A calibration figure's median, which every prediction divides by or scales with: one that is not
    positive (a broken benchmark, or a device sending any finite number) stops the prediction with a
    reason instead of dividing by zero or predicting negative times."""
    value = float(statistics.median(metric["samples"]))
    if not value > 0:
        raise PredictionInputError(
            f"{device}'s calibration gave {name} = {value:g} {metric.get('unit', '')}, not a positive figure;"
            " run `ctxscope agent calibrate` on it again"
        )
    return value


@dataclass(frozen=True)
class ClassTime:
    time_ms: float  # device time per pass
    kernels: float  # kernels per pass


@dataclass(frozen=True)
class SourcePoint:
    """One profiled point of the measured device."""

    model: str
    phase: str
    context_len: int
    runtime: str
    scan: str
    classes: dict[str, ClassTime]
    latency_ms: float  # timed pass (CUDA events), median
    logits: str
    precision: str

    @property
    def device_ms(self) -> float:
        return sum(c.time_ms for c in self.classes.values())


def _plausible(latency_samples: list[float], classes: Mapping[str, _ClassFigures]) -> bool:
    """A profile to scale from: a positive timed latency, kernel time and counts not negative, some
    kernel time in all (interpolation between lengths takes logarithms of what comes of it)."""
    times = [v.time_ms for v in classes.values()]
    kernels = [v.kernels for v in classes.values()]
    return statistics.median(latency_samples) > 0 and min(times) >= 0 and min(kernels) >= 0 and sum(times) > 0


def source_points(records: Iterable[Mapping[str, Any]]) -> list[SourcePoint]:
    """Profiled points (results with `details.operators` and a timed latency), one per model, phase,
    runtime, precision, logits mode and length; a later record of the same point replaces an earlier
    one. A record whose operators have another shape, a latency not in a unit of time, or a point whose
    profile is not plausible (`_plausible`), is left out."""
    found: dict[tuple[str, str, str, str, str, int], SourcePoint] = {}
    for r in records:
        if r.get("kind") != "result" or r.get("outcome") != "ok":
            continue
        operators = _shaped(_OPERATORS, (r.get("details") or {}).get("operators") or {}) or {}
        for phase, ops in operators.items():
            latency = samples_ms(r.get("metrics", {}).get(f"profile_{phase}_latency"))
            if not latency or not ops.classes:
                continue
            passes = max(1, ops.passes)
            if not _plausible(latency, ops.classes):
                continue
            implementation = r.get("implementation", {})
            runtime = str(implementation.get("runtime", "unknown"))
            point = SourcePoint(
                model=r["model"],
                phase=phase,
                context_len=int(r["context_len"]),
                runtime=runtime,
                scan=scan_family(r["model"], implementation),
                classes={
                    cls: ClassTime(v.time_ms / passes, v.kernels / passes) for cls, v in ops.classes.items()
                },
                latency_ms=statistics.median(latency),
                logits=str(r.get("logits", "last")),
                precision=str(r.get("precision", "")),
            )
            found[(point.model, phase, runtime, point.precision, point.logits, point.context_len)] = point
    return sorted(
        found.values(), key=lambda p: (p.model, p.phase, p.runtime, p.precision, p.logits, p.context_len)
    )


def samples_ms(metric: Any) -> list[float]:
    """A metric's samples in milliseconds; none where it is absent, not in a unit of time, or of
    another shape (records are free-form on the wire)."""
    if not isinstance(metric, Mapping) or not isinstance(metric.get("samples"), list):
        return []
    unit, factor = canonical(str(metric.get("unit")))
    if unit != "ms":
        return []
    return [float(v) * factor for v in metric["samples"] if isinstance(v, int | float)]
