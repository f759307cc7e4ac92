"""The `ctxscope agent run` / `maxctx` commands, through click's runner."""

from __future__ import annotations

import io
import json
from pathlib import Path

from click.testing import CliRunner

from ctxscope.agent.cli import agent
from ctxscope.agent.records import JsonLinesSink
from ctxscope.shared.messages import MESSAGE_ADAPTER, RunProgress


def test_run_writes_records_and_a_table(tmp_path: Path) -> None:
    plan = tmp_path / "plan.toml"
    plan.write_text(
        'name = "cli"\nmodels = ["qwen2.5-0.5b"]\ncontext_lengths = [16]\nprecisions = ["fp32"]\n'
        "tiny = true\nwarmups = 0\nmin_reps = 2\nmax_reps = 3\nmin_time_s = 0.0\n"
        'decode_tokens = 2\nisolate = "never"\n'
    )
    out = tmp_path / "records.jsonl"
    result = CliRunner().invoke(
        agent, ["run", str(plan), "--out", str(out), "--torch-device", "cpu", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    assert "1 ok, 0 failed" in result.output
    records = [MESSAGE_ADAPTER.validate_json(line) for line in out.read_text().splitlines()]
    kinds = [r.kind for r in records if r.kind != "telemetry"]
    assert kinds == ["run_started", "run_progress", "result", "run_finished"]
    # telemetry is on by default: the host's CPU and memory were sampled and written alongside
    telemetry = [r for r in records if r.kind == "telemetry"]
    assert telemetry and {"host"} <= {r.source for r in telemetry}
    assert all(len(r.timestamps()) == len(next(iter(r.channels.values())).values()) for r in telemetry)


def test_run_reports_plan_errors(tmp_path: Path) -> None:
    plan = tmp_path / "plan.toml"
    plan.write_text('name = "bad"\nmodels = ["nope"]\ncontext_lengths = [16]\n')
    result = CliRunner().invoke(agent, ["run", str(plan), "--torch-device", "cpu"])
    assert result.exit_code != 0
    assert "unknown model(s) nope; valid names:" in result.output


def test_maxctx_rejects_unknown_models_and_bad_caps() -> None:
    result = CliRunner().invoke(agent, ["maxctx", "nope"])
    assert result.exit_code != 0 and "valid names:" in result.output
    result = CliRunner().invoke(
        agent, ["maxctx", "qwen2.5-0.5b", "--memory-cap", "plenty", "--torch-device", "cpu"]
    )
    assert result.exit_code != 0 and "not a size" in result.output


def test_json_lines_sink_writes_every_record_and_keeps_none() -> None:
    """A long headless sweep (telemetry included) must not grow in memory: records go to the file only."""
    out = io.StringIO()
    sink = JsonLinesSink(out, "dev-1")
    for done in range(3):
        sink.emit(RunProgress, run_id="r", done=done, total=3, point="p")
    assert sink.records == []
    assert [json.loads(line)["seq"] for line in out.getvalue().splitlines()] == [1, 2, 3]


def test_maxctx_writes_a_run_of_records(tmp_path: Path) -> None:
    out = tmp_path / "records.jsonl"
    args = ["maxctx", "qwen2.5-0.5b", "--tiny", "--precision", "fp32", "--torch-device", "cpu"]
    result = CliRunner().invoke(agent, [*args, "--start", "64", "--max-tokens", "64", "--out", str(out)])
    assert result.exit_code == 0, result.output
    records = [MESSAGE_ADAPTER.validate_json(line) for line in out.read_text().splitlines()]
    assert [r.kind for r in records] == ["run_started", "run_progress", "result", "run_finished"]
    started, found, finished = records[0], records[2], records[3]
    assert f"run {started.run_id}: qwen2.5-0.5b fp32" in result.output
    assert found.details["search"]["summary"] == ">= 64 tokens, bounded by max_tokens=64"
    assert found.metrics["max_context"].samples == [64.0] and found.manifest["plan_hash"] == started.plan_hash
    assert (finished.outcome, finished.points_ok) == ("completed", 1)
