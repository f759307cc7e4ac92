"""The prediction view of one device, from the collector store: which measured device serves as the
source, both devices' rates, the predicted curves with bands, the assumptions with their status, and
the device's own measured points beside the predictions once they exist."""

from __future__ import annotations

import re
import statistics
from collections.abc import Mapping
from typing import Any, Protocol

from ctxscope.collector.predict.inputs import (
    DeviceRates,
    PredictionInputError,
    SourcePoint,
    peak_table,
    rates_from_calibration,
    rates_from_peaks,
    samples_ms,
    source_points,
)
from ctxscope.collector.predict.model import OutsideMeasuredRange, Prediction, at_length, predict_curve
from ctxscope.collector.shrunk import shrunk_run_ids
from ctxscope.shared.messages import CALIBRATION_FAMILY

METRIC_OF_PHASE = {"prefill": "ttft", "decode": "decode_per_token"}


class Store(Protocol):
    def devices(self) -> list[dict[str, Any]]: ...

    def results(self, device: str, run_id: str | None = None) -> list[dict[str, Any]]: ...

    def runs(self, device: str | None = None) -> list[dict[str, Any]]: ...


def _records(store: Store, device: str) -> list[dict[str, Any]]:
    """A device's runs and results in wire form (with `kind`), as the predictor's readers take them.
    Results of shrunk runs (`tiny = true`) are left out: a shrunk variant is neither a profile to
    predict the real model from nor a measurement of it."""
    stored = store.runs(device)
    shrunk = shrunk_run_ids(stored)
    runs = [
        {**r, "kind": "run_started", "ts": r.get("started_ts") or 0, "plan": r.get("plan") or {}}
        for r in stored
    ]
    return runs + [{**r, "kind": "result"} for r in store.results(device) if r["run_id"] not in shrunk]


def peaks_key_for(description: str) -> str | None:
    for key, entry in peak_table().items():
        if re.search(entry["match"], description):
            return key
    return None


def device_rates(device: str, records: list[dict[str, Any]]) -> DeviceRates:
    """Calibrated rates where the device has a calibration (peak table for families it lacks), else the
    peak table entry that its manifests name or match, all assumed."""
    runs = [r for r in records if r["kind"] == "run_started"]
    key: str | None = None
    for run in runs:  # manifests are free-form on the wire: a field of another type is absent here
        manifest = run.get("manifest") or {}
        named = manifest.get("device_peaks")
        if not key and isinstance(named, str) and named in peak_table():
            key = named
        gpu = manifest.get("gpu")
        description = manifest.get("device_description") or (
            gpu.get("name") if isinstance(gpu, dict) else None
        )
        if not key and isinstance(description, str):
            key = peaks_key_for(description)
    if any("calibrate" in r["plan"] for r in runs):
        return rates_from_calibration(records, fallback=key)
    if key is None:
        raise PredictionInputError(f"{device} has no calibration and no peak table entry")
    return rates_from_peaks(key)


def decode_on_graph(records: list[dict[str, Any]]) -> tuple[bool, str, str]:
    """Whether the target replays its decode step from a CUDA graph, as (replayed, status, how): its
    newest measured decode point's path where it has one (measured), else the agent's default on the
    device its newest calibration ran on (a graph path on a GPU, eager on a CPU: assumed)."""
    decodes = [
        r
        for r in records
        if r["kind"] == "result"
        and r.get("family") != CALIBRATION_FAMILY
        and r.get("outcome") == "ok"
        and "decode_per_token" in (r.get("metrics") or {})
        and (r.get("implementation") or {}).get("decode_path")
    ]
    if decodes:
        path = str(max(decodes, key=lambda r: r.get("ts") or 0)["implementation"]["decode_path"])
        return "graph" in path, "measured", f"the decode path of the device's newest decode point: {path}"
    calibrations = [r for r in records if r["kind"] == "run_started" and "calibrate" in r["plan"]]
    if calibrations:
        spec = max(calibrations, key=lambda r: r.get("ts") or 0)["plan"]["calibrate"]
        device = str(spec.get("device")) if isinstance(spec, dict) else "unknown"
        on_gpu = device.startswith("cuda")
        how = f"the agent's default decode on the calibrated device ({device})"
        return on_gpu, "assumed", how
    return False, "assumed", "no decode point and no calibration: eager, as profiled"


def _source_device(
    store: Store, target: str, wanted: str | None
) -> tuple[str, list[dict[str, Any]], list[SourcePoint]]:
    """The measured device to predict from, with its records and profiled points."""
    candidates = [wanted] if wanted else [d["device"] for d in store.devices() if d["device"] != target]
    for device in candidates:
        records = _records(store, device)
        points = source_points(records)
        if points:
            return device, records, points
    raise PredictionInputError(
        "no measured device with profiled points (ctxscope agent profile) to predict from"
    )


def _rates_json(rates: DeviceRates) -> dict[str, Any]:
    return {
        "device": rates.device,
        "calibrated": rates.calibrated,
        "reference": rates.reference,
        "rates": {
            k: {"value": v.value, "unit": v.unit, "status": v.status, "how": v.how}
            for k, v in rates.rates.items()
        },
        "launch_floor_ms": rates.launch_floor_ms,
        "host_per_op_ms": rates.host_per_op_ms,
    }


def assumptions(source: DeviceRates, target: DeviceRates, points: list[SourcePoint]) -> list[dict[str, str]]:
    """Every input of the prediction with whether it was measured or assumed."""
    out: list[dict[str, str]] = []
    for family in sorted(set(source.rates) & set(target.rates)):
        for side, rates in (("source", source), ("target", target)):
            r = rates.rates[family]
            out.append(
                {
                    "what": f"{side} {family} rate",
                    "value": f"{r.value:.4g} {r.unit}",
                    "status": r.status,
                    "how": r.how,
                }
            )
    for side, rates in (("source", source), ("target", target)):
        for what, value in (
            ("launch floor", rates.launch_floor_ms),
            ("host cost per eager op", rates.host_per_op_ms),
        ):
            out.append(
                {
                    "what": f"{side} {what}",
                    "value": "unknown" if value is None else f"{value * 1e3:.3g} µs",
                    "status": "measured" if value is not None else "assumed",
                    "how": "calibration"
                    if value is not None
                    else "not calibrated: floors left out; host-bound points are lower bounds",
                }
            )
    if target.reference:
        out.append(
            {
                "what": "target calibration",
                "value": "CPU reference kernels",
                "status": "measured",
                "how": "torch reference versions on the CPU, not GPU kernels",
            }
        )
    logits = sorted({p.logits for p in points})
    out.append(
        {
            "what": "logits",
            "value": ", ".join(logits),
            "status": "measured",
            "how": "as the source profiled them",
        }
    )
    return out


Series = tuple[str, str, str, str, str]  # model, phase, runtime, precision, logits mode


def measured_points(records: list[dict[str, Any]]) -> dict[Series, dict[int, float]]:
    """The device's own medians in ms per series (model, phase, runtime, precision, logits mode) and
    length, from non-calibration results, so that a prediction meets only measurements of what it
    predicts; a median that is not positive is no latency to compare a prediction with, and is left out."""
    out: dict[Series, dict[int, float]] = {}
    for r in sorted(records, key=lambda r: r.get("ts") or 0):
        if r["kind"] != "result" or r.get("family") == CALIBRATION_FAMILY or r.get("outcome") != "ok":
            continue
        runtime = str((r.get("implementation") or {}).get("runtime", "unknown"))
        for phase, metric in METRIC_OF_PHASE.items():
            samples = samples_ms((r.get("metrics") or {}).get(metric))
            if samples and (value := statistics.median(samples)) > 0:
                precision, logits = str(r.get("precision", "")), str(r.get("logits", "last"))
                series = (r["model"], phase, runtime, precision, logits)
                out.setdefault(series, {})[int(r["context_len"])] = value
    return out


def _curve_name(series: Series, others: list[Series]) -> str:
    """ "model (runtime)", with precision and logits mode where the model has curves of several."""
    model, _phase, runtime, precision, logits = series
    name = f"{model} ({runtime})"
    if any(o[:3] == series[:3] and o != series for o in others):
        name += f" {precision}" + ("" if logits == "last" else f" logits={logits}")
    return name


def prediction_view(store: Store, device: str, source_device: str | None = None) -> dict[str, Any]:
    target_records = _records(store, device)
    target = device_rates(device, target_records)
    source_name, source_records, points = _source_device(store, device, source_device)
    source = device_rates(source_name, source_records)
    groups: dict[Series, list[SourcePoint]] = {}
    for p in points:
        groups.setdefault((p.model, p.phase, p.runtime, p.precision, p.logits), []).append(p)
    measured = measured_points(target_records)
    graphed, graph_status, graph_how = decode_on_graph(target_records)
    curves = []
    unpredicted = []
    for series, group in sorted(groups.items()):
        model, phase, runtime, precision, logits = series
        try:
            curve = predict_curve(group, source, target, graph_replayed=graphed and phase == "decode")
        except PredictionInputError as exc:
            unpredicted.append({"model": model, "phase": phase, "runtime": runtime, "reason": str(exc)})
            continue
        bound = [p.context_len for p in curve if p.host_bound or p.lower_bound]
        curves.append(
            {
                "name": _curve_name(series, list(groups)),
                "model": model,
                "phase": phase,
                "metric": METRIC_OF_PHASE.get(phase, phase),
                "runtime": runtime,
                "precision": precision,
                "logits": logits,
                "measured_range": [curve[0].context_len, curve[-1].context_len],
                "host_bound_up_to": max(bound) if bound else None,
                "points": [p.to_json() for p in curve],
                "comparison": _comparison(curve, measured.get(series, {})),
            }
        )
    return {
        "device": device,
        "source_device": source_name,
        "source": _rates_json(source),
        "target": _rates_json(target),
        "assumptions": [
            *assumptions(source, target, points),
            {
                "what": "target decode step",
                "value": "replayed from a CUDA graph (no host cost per op)" if graphed else "eager",
                "status": graph_status,
                "how": graph_how,
            },
        ],
        "curves": curves,
        "unpredicted": unpredicted,
    }


def _comparison(curve: list[Prediction], measured: Mapping[int, float]) -> list[dict[str, Any]]:
    rows = []
    for length, value in sorted(measured.items()):
        row: dict[str, Any] = {"context_len": length, "measured_ms": value}
        try:
            p = at_length(curve, length)
        except OutsideMeasuredRange as exc:
            row["note"] = str(exc)
        else:
            row.update(
                predicted_ms=p.latency_ms,
                low_ms=p.low_ms,
                high_ms=p.high_ms,
                error=p.latency_ms / value - 1,
                in_band=value >= p.low_ms and (p.high_ms is None or value <= p.high_ms),
                lower_bound=p.lower_bound,
            )
        rows.append(row)
    return rows
