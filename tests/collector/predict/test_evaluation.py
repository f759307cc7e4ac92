"""The committed evaluation is what the script makes of the committed files."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ctxscope.agent.calibrate.run import calibrate_run
from ctxscope.agent.records import JsonLinesSink
from tests.bench_scripts import load_bench

ROOT = Path(__file__).resolve().parents[3]


def load() -> Any:
    return load_bench("prediction/evaluate.py")


def test_readme_summary_matches_the_script() -> None:
    module = load()
    result = module.evaluate(argparse.Namespace(target_calibration=[], source_calibration=None))
    table = module.markdown(result)
    readme = (ROOT / "results/prediction/README.md").read_text()
    summary = table.split("\n\n")[0]
    assert summary in readme
    assert table == (ROOT / "results/prediction/evaluation.md").read_text().rstrip("\n")
    not_predicted = [r for r in result["rows"] if r["length"] == 256]
    assert not_predicted and all("outside the measured lengths" in r["status"] for r in not_predicted)


def test_takes_a_source_calibration_file(tmp_path: Path) -> None:
    """The file `bench/h200_calibrate.sh` writes (here a CPU one): the H200 set becomes calibrated,
    the boards without a calibration stay on their stated peaks."""
    path = tmp_path / "calibration.jsonl"
    with path.open("w") as f:
        calibrate_run(JsonLinesSink(f, "h200"), device="cpu", budget_s=2.0, tiny=True)
    module = load()
    result = module.evaluate(argparse.Namespace(target_calibration=[], source_calibration=path))
    calibrated = {s["set"]: s["calibrated"] for s in result["summary"]}
    assert calibrated["H200 (self): engine TTFT"] is True
    assert not calibrated["Jetson Orin Nano: forward under profiler"]
    assert result["source"]["rates"]["gemm"]["status"] == "measured"
