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


def test_the_fair_decode_crossovers_are_those_in_the_ssm_compiled_readme(
    capsys: pytest.CaptureFixture[str],
) -> None:
    report = _report_module()
    curves = report.curves_tables(RESULTS)
    graph = report.graph_decode(RESULTS, curves)
    capsys.readouterr()
    report.fair_crossovers(graph, report.fair_decode(RESULTS))
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    readme = set((RESULTS / "ssm-compiled" / "README.md").read_text().splitlines())
    assert len(rows) == 9  # the header and 2 x 4 pairs
    assert [row for row in rows if row not in readme] == []


def test_an_ssm_is_compared_on_its_faster_path_over_the_lengths_both_paths_ran() -> None:
    report = _report_module()
    # "b" is slower where both ran (4096) though its other points are fast: "a" is kept
    paths = {"a": {4096: 1.5, 32768: 1.5}, "b": {1024: 0.1, 4096: 1.9, 131072: 0.1}}
    assert report.fastest_path(paths) == "a"
    assert report.fastest_path({"a": {1: 2.0}, "b": {2: 1.0}}) == "b"  # none shared: each its own
