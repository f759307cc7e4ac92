"""A calibrated device's benchmark figures (`agent calibrate`) are not characterization points: no
device page, comparison, report or exported aggregate lists "calib-stream at 268435456 tokens" as a
model; the exported results table still holds them, marked by their family."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest

from ctxscope.agent.calibrate.run import calibrate_run
from ctxscope.agent.records import MemorySink
from ctxscope.collector.export import export_tables
from ctxscope.collector.readmodel import views
from ctxscope.shared.messages import CALIBRATION_FAMILY, Message, PointResult

DEVICE = "orin-nano"


@pytest.fixture(scope="module")
def calibration() -> list[Message]:
    """A real calibration on the CPU, at its tiny sizes."""
    sink = MemorySink(device=DEVICE)
    calibrate_run(sink, device="cpu", budget_s=3.0, tiny=True)
    return list(sink.records)  # type: ignore[arg-type]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_calibration_figures_stay_out_of_characterization(
    backend: str,
    request: pytest.FixtureRequest,
    calibration: list[Message],
    feed_store: Any,
    result_factory: Any,
    tmp_path: Path,
) -> None:
    store = request.getfixturevalue("store" if backend == "sqlite" else "pg_store")
    figures = [r for r in calibration if isinstance(r, PointResult)]
    assert figures and all(r.family == CALIBRATION_FAMILY for r in figures)
    feed_store(store, calibration)
    measured = result_factory(device=DEVICE, context_len=4096, metrics={"ttft": ("ms", [900.0, 910.0])})
    feed_store(store, [measured])

    page = views.device(store, DEVICE)
    assert {p["model"] for p in page["characterization"]["points"]} == {measured.model}
    assert page["result_count"] == 1
    assert views.comparison(store, [], [], "ttft")["models"] == [measured.model]

    export_tables(store, tmp_path, ["csv"])
    with (tmp_path / "results.csv").open() as f:
        families = sorted(row["family"] for row in csv.DictReader(f))
    assert families.count(CALIBRATION_FAMILY) == len(figures)
    assert len(families) == len(figures) + 1
    with (tmp_path / "aggregates.csv").open() as f:
        assert [row["model"] for row in csv.DictReader(f)] == [measured.model]
