"""Shrunk models are named as shrunk: results of a `tiny = true` plan never pass for the real model.

A plan with `tiny = true` (the demo, CPU smoke runs) measures the zoo's shrunk variants: the same
architecture with a few layers and small widths. Their records carry the real model's name and the
run's plan says `tiny`; every view labels them "<model> (shrunk)", so they are never pooled with,
nor set beside, figures of the real model (the reference study's, or a real run's).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from ctxscope.collector.aggregate.points import is_calibration
from ctxscope.shared.messages import PointResult

SHRUNK_SUFFIX = " (shrunk)"


class RunSource(Protocol):
    def runs(self, device: str | None = None) -> list[dict[str, Any]]: ...

    def results(self, device: str, run_id: str | None = None) -> list[dict[str, Any]]: ...


def shrunk_label(model: str) -> str:
    return model if model.endswith(SHRUNK_SUFFIX) else model + SHRUNK_SUFFIX


def is_shrunk_label(model: str) -> bool:
    return model.endswith(SHRUNK_SUFFIX)


def shrunk_run_ids(runs: Iterable[dict[str, Any]]) -> set[str]:
    """Runs whose plan asked for the shrunk variants."""
    return {run["run_id"] for run in runs if isinstance(run.get("plan"), dict) and run["plan"].get("tiny")}


def label_rows(rows: Iterable[dict[str, Any]], shrunk_runs: set[str]) -> list[dict[str, Any]]:
    """Store rows of results with the model of a shrunk run renamed "<model> (shrunk)"."""
    return [
        {**row, "model": shrunk_label(row["model"])} if row["run_id"] in shrunk_runs else row for row in rows
    ]


def labelled_results(source: RunSource, device: str) -> list[dict[str, Any]]:
    """A device's result rows, shrunk models labelled as such."""
    return label_rows(source.results(device), shrunk_run_ids(source.runs(device)))


def labelled_point_results(source: RunSource, device: str) -> list[PointResult]:
    """A device's results as contract records, shrunk models labelled as such."""
    return [PointResult.model_validate(row) for row in labelled_results(source, device)]


def characterization_results(source: RunSource, device: str) -> list[PointResult]:
    """A device's measured points, shrunk models labelled as such, calibration figures left out."""
    return [r for r in labelled_point_results(source, device) if not is_calibration(r)]
