"""The committed evaluation is what the script makes of the committed files."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_summary_matches_the_script() -> None:
    spec = importlib.util.spec_from_file_location("evaluate", ROOT / "bench/prediction/evaluate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.evaluate(argparse.Namespace(target_calibration=[], source_calibration=None))
    table = module.markdown(result)
    readme = (ROOT / "results/prediction/README.md").read_text()
    summary = table.split("\n\n")[0]
    assert summary in readme
    assert table == (ROOT / "results/prediction/evaluation.md").read_text().rstrip("\n")
    not_predicted = [r for r in result["rows"] if r["length"] == 256]
    assert not_predicted and all("outside the measured lengths" in r["status"] for r in not_predicted)
