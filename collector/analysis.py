"""`ctxscope.collector.load(url)`: a store's results as a pandas DataFrame, for notebooks.

One row per (result, metric): the point (device, run, model, context length, precision, logits
mode, kernel path, outcome) and the metric's name, canonical unit, how it was measured and the
statistics of its raw samples (the samples themselves, in that unit, in `samples`). Units are a column, not a
guess: `df[df.metric == "ttft"]` holds one unit per metric, and `df.attrs["units"]` maps each
metric to it. Results of shrunk (tiny) plans carry "<model> (shrunk)". Needs the `analysis` extra.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ctxscope.collector.aggregate.stats import summarize
from ctxscope.collector.aggregate.units import canonical
from ctxscope.collector.shrunk import labelled_point_results
from ctxscope.collector.store import open_store

if TYPE_CHECKING:
    import pandas as pd

COLUMNS = (
    "device",
    "run_id",
    "point_id",
    "model",
    "family",
    "context_len",
    "precision",
    "logits",
    "implementation",
    "outcome",
    "metric",
    "unit",
    "method",
    "n",
    "median",
    "p25",
    "p75",
    "min",
    "max",
    "samples",
    "ts_ns",
)


def load(url: str, devices: Sequence[str] = ()) -> pd.DataFrame:
    """The results of the store at `url` (sqlite:///PATH or postgresql://...), of every device or the
    named ones, one row per (result, metric). Failed points (outcome other than ok) have a row with
    the metric columns empty, so they are counted, never silently dropped."""
    try:
        import pandas as pd
    except ImportError as exc:
        raise ImportError("ctxscope.collector.load needs pandas: pip install 'ctxscope[analysis]'") from exc
    store = open_store(url, read_only=True)  # never an empty store where a path was mistyped
    try:
        chosen = list(devices) or [row["device"] for row in store.devices()]
        rows = [row for device in chosen for row in _rows(store, device)]
    finally:
        store.close()
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame["context_len"] = frame["context_len"].astype("int64")
    frame.attrs["units"] = {
        metric: unit
        for metric, unit in zip(frame["metric"], frame["unit"], strict=True)
        if metric is not None
    }
    return frame


def _rows(store: Any, device: str) -> list[dict[str, Any]]:
    out = []
    for result in labelled_point_results(store, device):
        point = {
            "device": result.device,
            "run_id": result.run_id,
            "point_id": result.point_id,
            "model": result.model,
            "family": result.family,
            "context_len": result.context_len,
            "precision": result.precision,
            "logits": result.logits,
            "implementation": ";".join(f"{k}={v}" for k, v in sorted(result.implementation.items())),
            "outcome": result.outcome,
            "ts_ns": result.ts,
        }
        if not result.metrics:
            out.append({**point, "metric": None, "unit": None})
        for name, metric in sorted(result.metrics.items()):
            summary = summarize([metric])
            _, factor = canonical(metric.unit)
            out.append(
                {
                    **point,
                    "metric": name,
                    "unit": summary.unit,
                    "method": metric.method,
                    "n": summary.n,
                    "median": summary.median,
                    "p25": summary.p25,
                    "p75": summary.p75,
                    "min": summary.minimum,
                    "max": summary.maximum,
                    "samples": [x * factor for x in metric.samples],
                }
            )
    return out
