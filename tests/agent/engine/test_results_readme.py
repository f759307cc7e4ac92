"""results/engine/README.md shows what bench/engine/report.py makes of the committed H200 files: a
result file added or changed without regenerating the README's tables (or a table edited by hand)
fails here."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from tests.bench_scripts import load_bench

REPO = Path(__file__).resolve().parents[3]
RESULTS = REPO / "results" / "engine"


def _report_module() -> ModuleType:
    return load_bench("engine/report.py")


def test_every_table_row_of_the_report_is_in_the_readme(capsys: pytest.CaptureFixture[str]) -> None:
    """The tables that need only the result files (the max-context table also reads the study's
    figures from outside the repository): benchmarks, curves, energy, crossovers."""
    report = _report_module()
    report.benchmarks(RESULTS)
    curves = report.curves_tables(RESULTS)
    report.energy_table(curves)
    report.crossovers(curves, report.graph_decode(RESULTS, curves))
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    readme = set((RESULTS / "README.md").read_text().splitlines())
    assert len(rows) > 60
    assert [row for row in rows if row not in readme] == []
