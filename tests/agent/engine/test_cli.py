"""The `ctxscope agent run` / `maxctx` commands, through click's runner."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from ctxscope.agent.cli import agent
from ctxscope.agent.engine.limits import MAX_CONTEXT_TOKENS
from ctxscope.agent.engine.plan import MaxContextPlan
from ctxscope.agent.records import JsonLinesSink, RecordsNotWritten
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
    args += ["--start", "64", "--max-tokens", "64", "--out", str(out), "--memory-cap", "1GiB"]
    result = CliRunner().invoke(agent, args)
    assert result.exit_code == 0, result.output
    # a cap the CPU does not apply is said at the start and in the summary, as in the record
    assert "warning: --memory-cap caps CUDA device memory only: on cpu the search runs without it" in (
        result.output
    )
    assert "cap=1GiB not applied:" in result.output
    records = [MESSAGE_ADAPTER.validate_json(line) for line in out.read_text().splitlines()]
    assert [r.kind for r in records] == ["run_started", "run_progress", "result", "run_finished"]
    started, found, finished = records[0], records[2], records[3]
    assert f"run {started.run_id}: qwen2.5-0.5b fp32" in result.output
    assert found.details["search"]["summary"] == ">= 64 tokens, bounded by max_tokens=64"
    assert found.metrics["max_context"].samples == [64.0] and found.manifest["plan_hash"] == started.plan_hash
    assert (finished.outcome, finished.points_ok) == ("completed", 1)


@pytest.mark.parametrize(
    ("option", "field", "value"),
    [
        ("--step", "step", 0),
        ("--step", "step", -3),
        ("--probe-timeout", "probe_timeout_s", 0.0),
        ("--tolerance", "rel_tol", 0.0),
        ("--tolerance", "rel_tol", 1.0),
        ("--max-tokens", "max_tokens", MAX_CONTEXT_TOKENS + 1),
        ("--start", "start", MAX_CONTEXT_TOKENS + 1),
    ],
)
def test_maxctx_refuses_what_a_plan_refuses(option: str, field: str, value: float) -> None:
    """The command's bounds are the [max_context] table's: a step of 0 would bisect for ever."""
    args = ["maxctx", "qwen2.5-0.5b", "--tiny", "--torch-device", "cpu", option, str(value)]
    result = CliRunner().invoke(agent, args)
    assert result.exit_code == 2 and option in result.output, result.output
    with pytest.raises(ValidationError):
        MaxContextPlan.model_validate({field: value})


@pytest.mark.parametrize("guess", ["1024", "2097152", str(MAX_CONTEXT_TOKENS + 1)])
def test_maxctx_upper_guess_lies_between_start_and_max_tokens(guess: str) -> None:
    args = ["maxctx", "qwen2.5-0.5b", "--tiny", "--torch-device", "cpu", "--upper-guess", guess]
    result = CliRunner().invoke(agent, args)
    assert result.exit_code == 2 and "--upper-guess" in result.output, result.output


@pytest.mark.parametrize("command", ["run", "maxctx", "profile", "calibrate"])
def test_cuda_where_torch_sees_none_is_refused_before_anything_runs(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    plan = tmp_path / "plan.toml"
    plan.write_text('models = ["qwen2.5-0.5b"]\ncontext_lengths = [16]\n')
    target = {"run": [str(plan)], "maxctx": ["qwen2.5-0.5b"], "profile": ["qwen2.5-0.5b"]}.get(command, [])
    result = CliRunner().invoke(agent, [command, *target, "--torch-device", "cuda"])
    assert result.exit_code == 2, result.output
    assert "sees no CUDA device here: use --torch-device cpu" in result.output


def test_run_names_a_plan_that_is_not_text(tmp_path: Path) -> None:
    plan = tmp_path / "p.toml"
    plan.write_bytes(b"\xff\xfe")
    result = CliRunner().invoke(agent, ["run", str(plan), "--torch-device", "cpu"])
    assert result.exit_code == 1 and result.exception is not None
    assert isinstance(result.exception, SystemExit), result.exception
    error = f"Error: {plan}: not UTF-8 text (byte 0): a plan is a TOML file"
    assert result.output.strip().splitlines() == [error]


def _tiny_plan(tmp_path: Path) -> Path:
    plan = tmp_path / "plan.toml"
    plan.write_text(
        'name = "cli"\nmodels = ["qwen2.5-0.5b"]\ncontext_lengths = [16]\nprecisions = ["fp32"]\n'
        'tiny = true\nwarmups = 0\nmin_reps = 2\nmax_reps = 3\nmin_time_s = 0.0\nisolate = "never"\n'
    )
    return plan


@pytest.mark.parametrize(
    "command",
    [
        ["calibrate", "--tiny"],
        ["profile", "qwen2.5-0.5b", "--tiny", "--lengths", "16"],
        ["maxctx", "qwen2.5-0.5b", "--tiny", "--start", "16", "--max-tokens", "16"],
        ["run"],
    ],
)
def test_an_out_file_that_cannot_be_opened_is_a_bad_option(tmp_path: Path, command: list[str]) -> None:
    if command == ["run"]:
        command = ["run", str(_tiny_plan(tmp_path))]
    out = tmp_path / "missing" / "records.jsonl"
    result = CliRunner().invoke(agent, [*command, "--torch-device", "cpu", "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '--out': {out}: No such file or directory" in result.output
    assert not isinstance(result.exception, FileNotFoundError)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_records_that_cannot_be_written_end_the_run_in_one_line(tmp_path: Path) -> None:
    args = ["run", str(_tiny_plan(tmp_path)), "--torch-device", "cpu", "--no-progress", "--out", "/dev/full"]
    result = CliRunner().invoke(agent, [*args, "--telemetry-rate-hz", "0"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    error = "Error: records could not be written to /dev/full: No space left on device"
    assert result.output.strip().splitlines() == [error]


def test_a_failed_write_names_the_stream_and_the_reason() -> None:
    class Full(io.StringIO):
        name = "records.jsonl"

        def flush(self) -> None:
            raise OSError(28, "No space left on device")

    sink = JsonLinesSink(Full(), "dev-1")
    with pytest.raises(RecordsNotWritten, match=r"^records could not be written to records\.jsonl: No space"):
        sink.emit(RunProgress, run_id="r", done=0, total=1, point="p")


def test_maxctx_exits_1_when_nothing_fits(tmp_path: Path) -> None:
    """As `agent run` does when a point failed: every probe timed out, so no length was found."""
    out = tmp_path / "records.jsonl"
    args = ["maxctx", "qwen2.5-0.5b", "--tiny", "--precision", "fp32", "--torch-device", "cpu"]
    args += ["--out", str(out), "--start", "1", "--max-tokens", "1", "--probe-timeout", "0.01"]
    result = CliRunner().invoke(agent, args)
    assert result.exit_code == 1, result.output
    assert "nothing fits: 1 -> timeout" in result.output
    finished = MESSAGE_ADAPTER.validate_json(out.read_text().splitlines()[-1])
    assert (finished.kind, finished.points_failed) == ("run_finished", 1)
