"""The daemon's command handling and plan queue, with a real spool and the real engine on tiny models."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from ctxscope.agent.daemon import Daemon
from ctxscope.agent.transport.spool import Spool
from ctxscope.broker import free_port
from ctxscope.shared.codec import decode
from ctxscope.shared.messages import Command

PLAN = """
name = "daemon-test"
models = ["qwen2.5-0.5b"]
context_lengths = [16, 32]
precisions = ["fp32"]
tiny = true
warmups = 0
min_reps = 2
max_reps = 3
min_time_s = 0.0
decode_tokens = 0
isolate = "never"
"""


class StatusLog:
    """Stands in for the MQTT link: the daemon only reports its state through it."""

    def __init__(self) -> None:
        self.states: list[tuple[str, str | None]] = []

    def set_status(self, state: str, run_id: str | None = None, detail: str | None = None) -> None:
        self.states.append((state, run_id))


def command(name: str, args: dict[str, object]) -> Command:
    return Command(
        device="dev-1",
        stream="0123456789abcdef",
        seq=1,
        ts=time.time_ns(),
        command_id=f"c-{name}-{len(args)}",
        name=name,
        args=args,
        expires_at=time.time_ns() + 60 * 10**9,
    )


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "spool.sqlite", "dev-1")


def records(spool: Spool) -> list:
    return [decode(r.payload) for r in spool.oldest(10_000)]


def acks(spool: Spool) -> list:
    return [r for r in records(spool) if r.kind == "command_ack"]


@pytest.mark.parametrize(
    ("name", "args", "reason"),
    [
        ("reboot", {}, "unknown command 'reboot'; accepted: run_plan"),
        ("run_plan", {}, "needs args.plan"),
        ("run_plan", {"plan": "models = ["}, "not valid TOML"),
        (
            "run_plan",
            {"plan": PLAN.replace("qwen2.5-0.5b", "mamba3-1b")},
            "unknown model(s) mamba3-1b; valid names:",
        ),
        ("run_plan", {"plan": PLAN.replace("min_reps = 2", "min_reps = 0")}, "min_reps"),
    ],
)
def test_bad_commands_are_refused_with_their_reason(spool: Spool, name: str, args: dict, reason: str) -> None:
    daemon = Daemon(StatusLog(), spool, torch_device="cpu")  # type: ignore[arg-type]
    daemon.handle_command(command(name, args))
    (ack,) = acks(spool)
    assert not ack.accepted and ack.run_id is None
    assert reason in ack.reason


def test_an_accepted_plan_runs_under_the_acknowledged_run_id(spool: Spool) -> None:
    link = StatusLog()
    daemon = Daemon(link, spool, torch_device="cpu")  # type: ignore[arg-type]
    daemon.handle_command(command("run_plan", {"plan": PLAN}))
    (ack,) = acks(spool)
    assert ack.accepted and ack.run_id

    worker = threading.Thread(target=daemon.run_until_stopped)
    worker.start()
    deadline = time.monotonic() + 120
    while not any(r.kind == "run_finished" for r in records(spool)):
        assert time.monotonic() < deadline, "the plan did not finish"
        time.sleep(0.2)
    daemon.stopping.set()
    worker.join(10)

    emitted = records(spool)
    runs = {r.run_id for r in emitted if r.kind in ("run_started", "result", "run_finished")}
    assert runs == {ack.run_id}
    assert [r.outcome for r in emitted if r.kind == "run_finished"] == ["completed"]
    assert link.states == [("busy", ack.run_id), ("online", None)]


def test_plans_still_queued_at_stop_are_reported(spool: Spool) -> None:
    daemon = Daemon(StatusLog(), spool, torch_device="cpu")  # type: ignore[arg-type]
    daemon.handle_command(command("run_plan", {"plan": PLAN}))
    daemon.stopping.set()
    daemon.run_until_stopped()
    (warning,) = [r for r in records(spool) if r.kind == "log"]
    assert warning.level == "warning" and "accepted but not started" in warning.message


def test_on_a_gpu_points_past_the_ssd_kernel_limit_are_warned_about_first(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = Daemon(StatusLog(), spool, torch_device="cuda")  # type: ignore[arg-type]
    ran: list[str] = []

    def fake_run_plan(plan, sink, **kwargs):  # the warning must come before the run
        ran.append(plan.name)
        assert any(r.kind == "log" and "333046" in r.message for r in records(spool))
        daemon.stopping.set()
        return SimpleNamespace(points_ok=0, points_failed=0)

    monkeypatch.setattr("ctxscope.agent.daemon.run_plan", fake_run_plan)
    long_plan = 'name = "long"\nmodels = ["mamba2-780m"]\ncontext_lengths = [262144, 393216]\n'
    daemon.handle_command(command("run_plan", {"plan": long_plan}))
    daemon.run_until_stopped()
    assert ran == ["long"]
    (warning,) = [r for r in records(spool) if r.kind == "log"]
    assert warning.level == "warning" and "393216 tokens lie past 333046" in warning.message


@pytest.mark.slow
def test_sigterm_stops_serve_without_waiting_for_run_for(tmp_path: Path) -> None:
    serve = [
        sys.executable, "-c", "from ctxscope.cli import main; main()", "agent", "serve",
        "--device", "dev-1", "--broker", f"127.0.0.1:{free_port()}",
        "--spool", str(tmp_path / "spool.sqlite"),
        "--telemetry-rate-hz", "0", "--torch-device", "cpu", "--run-for", "600",
    ]  # fmt: skip
    child = subprocess.Popen(serve, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stderr is not None
        for line in child.stderr:  # logged once the signal handlers are in place
            if "agent dev-1: broker" in line:
                break
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=60) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
