"""`ctxscope agent calibrate` on the CPU at tiny sizes: records that validate, figures with spread."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from ctxscope.agent.cli import agent
from ctxscope.shared.messages import MESSAGE_ADAPTER


def test_calibrate_cpu_writes_records(tmp_path: Path) -> None:
    out = tmp_path / "calibration.jsonl"
    result = CliRunner().invoke(
        agent, ["calibrate", "--torch-device", "cpu", "--tiny", "--budget-s", "5", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    records = [MESSAGE_ADAPTER.validate_python(json.loads(line)) for line in out.read_text().splitlines()]
    kinds = [r.kind for r in records]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    started = records[0]
    assert "packages" in started.manifest and "operating_point" in started.manifest
    results = {r.point_id: r for r in records if r.kind == "result"}
    assert set(results) == {
        "calib-gemm",
        "calib-stream",
        "calib-selective-scan",
        "calib-ssd-chunk-scan",
        "calib-sdpa",
        "calib-launch-floor",
        "calib-host-per-op",
    }
    for name in ("calib-gemm", "calib-stream", "calib-sdpa"):
        r = results[name]
        assert r.outcome == "ok" and r.family == "calibration" and r.details["wall_s"] > 0
        assert r.details["calibration"]["reference"] is True  # CPU: torch reference, labelled
        assert r.metrics["calibration_time"].unit == "ms" and r.metrics["calibration_time"].n >= 3
        assert r.metrics["calibration_rate"].unit in {"TFLOP/s", "GB/s"}
    host = results["calib-host-per-op"]
    assert host.outcome == "ok" and 0 < host.metrics["calibration_time"].median < 1.0
    floor = results["calib-launch-floor"]
    assert floor.outcome == "skipped" and floor.error == "no GPU on this device"
    for name in ("calib-selective-scan", "calib-ssd-chunk-scan"):  # mamba_ssm needs CUDA to import
        assert results[name].outcome in {"ok", "skipped"}
        if results[name].outcome == "skipped":
            assert results[name].error
    assert "gemm" in result.output and "host_per_op" in result.output
