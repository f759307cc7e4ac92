"""The agent says what is wrong: broker failures in the log, `agent status`, `agent run`'s exit status."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from ctxscope.agent.cli import agent
from ctxscope.agent.localstate import StateWriter, write_state
from ctxscope.broker import free_port

FAILING_PLAN = (
    'name = "fails"\nmodels = ["mamba-130m"]\ncontext_lengths = [16]\nprecisions = ["fp32"]\ntiny = true\n'
    'warmups = 0\nmin_reps = 2\nmax_reps = 3\nmin_time_s = 0.0\ndecode_tokens = 2\nisolate = "never"\n'
    # no native mamba_ssm on a CPU: the point fails instead of falling back
    "require_fast_kernels = true\n"
)


def test_run_exits_non_zero_when_a_point_failed(tmp_path: Path) -> None:
    plan = tmp_path / "plan.toml"
    plan.write_text(FAILING_PLAN)
    result = CliRunner().invoke(
        agent, ["run", str(plan), "--torch-device", "cpu", "--no-progress", "--telemetry-rate-hz", "0"]
    )
    assert "0 ok, 1 failed" in result.output
    assert result.exit_code == 1
    help_text = CliRunner().invoke(agent, ["run", "--help"]).output
    assert "Exit status:" in help_text and "at least one point failed" in help_text


def test_serve_logs_an_unreachable_broker_and_status_shows_it(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    spool = tmp_path / "spool.sqlite"
    common = ["--device", "diag-1", "--spool", str(spool)]
    ctxscope = Path(sys.executable).with_name("ctxscope")
    command = [str(ctxscope), "agent", "serve", *common, "--broker", f"127.0.0.1:{port}"]
    serve = subprocess.run(
        [*command, "--telemetry-rate-hz", "0", "--run-for", "4"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert serve.returncode == 0, serve.stderr
    failures = [line for line in serve.stderr.splitlines() if "cannot reach broker" in line]
    # attempts at 0, 1 and 3 s; the same reason is logged once a minute, not per attempt
    assert len(failures) == 1, serve.stderr
    assert f"127.0.0.1:{port} (ConnectionRefusedError" in failures[0]
    assert "attempt 1, next retry in 1 s" in failures[0]

    status = CliRunner().invoke(agent, ["status", *common])
    assert status.exit_code == 1, status.output
    assert "agent:       stopped" in status.output
    assert f"127.0.0.1:{port} (not connected)" in status.output
    assert "ConnectionRefusedError" in status.output
    state = json.loads((tmp_path / "spool.state.json").read_text())
    assert state["spool_depth"] >= 0 and state["running"] is False
    as_json = CliRunner().invoke(agent, ["status", "--json", *common])
    assert as_json.exit_code == 1
    verdict = json.loads(as_json.stdout)
    assert verdict["healthy"] is False and verdict["state"] == state


def test_status_of_a_running_connected_agent_and_a_hung_one(tmp_path: Path) -> None:
    path = tmp_path / "spool.state.json"
    snapshot = {
        "device": "diag-2",
        "broker": "b:1883",
        "connected": True,
        "spool_depth": 7,
        "last_error": None,
    }
    writer = StateWriter(path, lambda: snapshot, interval_s=0.2)
    writer.start()
    try:
        time.sleep(0.1)
        args = ["status", "--device", "diag-2", "--spool", str(tmp_path / "spool.sqlite")]
        result = CliRunner().invoke(agent, args)
        assert result.exit_code == 0, result.output
        assert "spool depth: 7 records waiting" in result.output
        assert "b:1883 (connected)" in result.output
    finally:
        writer._stopped.set()  # stop refreshing without the final write: a hung agent
        writer._thread.join()
    time.sleep(0.7)
    hung = CliRunner().invoke(agent, args)
    assert hung.exit_code == 1
    assert "not refreshed" in hung.output
    snapshot["holding"] = True  # every collector offline: the agent keeps its records
    writer._write(running=True)
    held = CliRunner().invoke(agent, args)
    assert "spool depth: 7 records waiting (held: no collector is online to take them)" in held.output


def test_a_failed_state_write_is_retried_and_leaves_no_partial_file(tmp_path: Path) -> None:
    """A full disk once ended the state thread for good: `agent status` then called a running agent
    hung. Here the snapshot fails twice, then works; the thread goes on writing."""
    path = tmp_path / "spool.state.json"
    calls = {"n": 0}

    def snapshot() -> dict[str, object]:
        calls["n"] += 1
        if calls["n"] <= 2:
            raise OSError(28, "No space left on device")
        return {"device": "diag-4", "connected": False, "spool_depth": 0, "last_error": None}

    writer = StateWriter(path, snapshot, interval_s=0.05)
    writer.start()
    try:
        deadline = time.monotonic() + 5
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert path.exists() and writer._thread.is_alive()
    finally:
        writer.stop()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_a_state_write_that_fails_leaves_no_partial_file(tmp_path: Path) -> None:
    path = tmp_path / "spool.state.json"
    path.mkdir()
    (path / "x").touch()  # a non-empty directory: the rename onto it fails
    with pytest.raises(OSError):
        write_state(path, {"device": "diag-5"})
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_status_without_a_state_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        agent, ["status", "--device", "diag-3", "--spool", str(tmp_path / "s.sqlite")]
    )
    assert result.exit_code == 2
    assert "no agent state" in result.output
