"""Child-process outcomes: a SIGKILL on a unified-memory device is the OOM killer's, elsewhere a fault;
a job the child cannot read and a reply the parent cannot read are faults with their reason."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ctxscope.agent.engine import isolation
from ctxscope.agent.engine.outcome import Failure, Loaded, Measured, Probed
from ctxscope.agent.engine.point import KILL_AT_ENV, ModelChoice
from ctxscope.agent.engine.protocol import REPLY_MARK, LoadJob, ProbeJob

CHOICE = ModelChoice(name="qwen2.5-0.5b", precision="fp32", device="cpu", tiny=True)
PROBE = ProbeJob(context_len=16, logits="last")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("unified", "outcome", "reason"), [(True, "oom", "OOM killer"), (False, "fault", "SIGKILL")]
)
def test_sigkill_outcome_depends_on_memory_kind(
    monkeypatch: pytest.MonkeyPatch, unified: bool, outcome: str, reason: str
) -> None:
    monkeypatch.setattr(isolation, "is_unified_memory_device", lambda: unified)
    with isolation.Worker(env={KILL_AT_ENV: "16"}) as worker:
        assert isinstance(worker.request(LoadJob(choice=CHOICE), Loaded, 120), Loaded)
        reply = worker.request(PROBE, Probed, 120)
        assert not worker.alive
    assert isinstance(reply, Failure) and reply.outcome == outcome
    assert reason in reply.error


def test_a_failing_job_is_a_fault_and_ends_the_worker() -> None:
    with isolation.Worker() as worker:
        reply = worker.request(PROBE, Probed, 60)  # a probe before any model was loaded
        assert isinstance(reply, Failure) and reply.outcome == "fault"
        assert "before any model was loaded" in reply.error
        assert not worker.alive  # already gone: a runner replaces it before the next point
        again = worker.request(PROBE, Probed, 5)
        # the worker exited; the parent says so
        assert isinstance(again, Failure) and again.outcome == "fault"
        proc = worker.proc
    assert proc is not None and proc.stdin is not None and proc.stdin.closed  # no pipe left open


class ScriptedWorker(isolation.Worker):
    """A child that answers every job line with the given reply line, as a broken worker might."""

    def __init__(self, reply: str) -> None:
        super().__init__()
        script = textwrap.dedent(
            f"""
            import sys
            for line in sys.stdin:
                sys.stdout.write({REPLY_MARK!r} + {reply!r} + "\\n")
                sys.stdout.flush()
            """
        )
        self.argv = [sys.executable, "-c", script]


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("not json", "Invalid JSON"),
        ("[1, 2]", "input should be an object"),
        ('{"outcome": "ok", "op": "point", "metrics": {"ttft": {"unit": "ms"}}}', "metrics.ttft"),
        ('{"outcome": "ok", "op": "probe", "duration_s": 0.1}', "op: Input should be 'point'"),
        ('{"outcome": "exploded", "error": "x"}', "outcome"),
        ('{"outcome": "ok", "op": "point", "loops": [{"phase": "prefill", "inner": 1}]}', "loops.0"),
    ],
)
def test_a_malformed_reply_is_a_fault_with_its_reason(reply: str, reason: str) -> None:
    with ScriptedWorker(reply) as worker:
        outcome = worker.request(PROBE, Measured, 30)
        assert not worker.alive  # a child in an unknown state is ended; the runner starts a fresh one
    assert isinstance(outcome, Failure) and outcome.outcome == "fault"
    assert outcome.error.startswith("malformed reply from the worker: ")
    assert reason.lower() in outcome.error.lower(), outcome.error


def test_a_malformed_job_is_a_fault_from_the_child(tmp_path: Path) -> None:
    """The child validates what it reads too: a job it cannot read is answered as a fault, and it exits."""
    done = subprocess.run(
        isolation.Worker.argv,
        input='{"op": "probe", "context_len": -3, "logits": "some"}\n',
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 1
    (line,) = [line for line in done.stdout.splitlines() if line.startswith(REPLY_MARK)]
    reply = Failure.model_validate_json(line[len(REPLY_MARK) :])
    assert reply.outcome == "fault" and "malformed job" in reply.error
    assert "context_len" in reply.error and "logits" in reply.error


class HangingWorker(isolation.Worker):
    """A child that starts two helper processes (as compile workers are) and then hangs."""

    def __init__(self, pids: Path) -> None:
        super().__init__()
        script = textwrap.dedent(
            f"""
            import subprocess, sys, time
            helpers = [subprocess.Popen(["sleep", "300"]) for _ in range(2)]
            open({str(pids)!r}, "w").write(" ".join(str(h.pid) for h in helpers))
            sys.stdin.readline()
            time.sleep(300)
            """
        )
        self.argv = [sys.executable, "-c", script]


def test_a_timed_out_child_is_killed_with_the_processes_it_started(tmp_path: Path) -> None:
    import psutil

    pids = tmp_path / "helpers"
    with HangingWorker(pids) as worker:
        outcome = worker.request(PROBE, Measured, 3)
    assert isinstance(outcome, Failure) and outcome.outcome == "timeout"
    helpers = [psutil.Process(int(pid)) for pid in pids.read_text().split()] if pids.exists() else []
    assert len(helpers) == 2

    def ended(helper: psutil.Process) -> bool:  # reaped by the init it was handed to, or its zombie
        try:
            helper.wait(5)
        except psutil.NoSuchProcess:
            pass
        except psutil.TimeoutExpired:
            return helper.status() == psutil.STATUS_ZOMBIE
        return True

    assert all(ended(helper) for helper in helpers)


def test_a_busy_child_ends_with_the_processes_it_started_when_its_parent_dies(tmp_path: Path) -> None:
    """A run stopped by a time limit (or killed) left its worker computing on the GPU, which then
    skewed the next run's idle power. The worker's watch ends it, and its group, once the parent is
    gone, even while its main thread is busy."""
    import os
    import signal

    import psutil

    child = textwrap.dedent(
        """
        import os, subprocess, time
        from ctxscope.agent.engine.worker import die_with_parent
        die_with_parent(os.getppid())
        helper = subprocess.Popen(["sleep", "300"])
        print(os.getpid(), helper.pid, flush=True)
        time.sleep(300)  # busy, as with a long measurement
        """
    )
    parent = textwrap.dedent(
        f"""
        import subprocess, sys, time
        subprocess.Popen([sys.executable, "-c", {child!r}], start_new_session=True)
        time.sleep(300)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    pids = [int(pid) for pid in process.stdout.readline().split()]
    assert len(pids) == 2
    os.kill(process.pid, signal.SIGKILL)
    process.wait()

    def gone(pid: int) -> bool:  # reaped by the init it was handed to, or its zombie
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    deadline = time.monotonic() + 5
    while not all(gone(pid) for pid in pids):
        assert time.monotonic() < deadline, "the worker or its helper outlived the parent"
        time.sleep(0.1)
