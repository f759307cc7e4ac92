"""Child-process outcomes: a SIGKILL on a unified-memory device is the OOM killer's, elsewhere a fault."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from ctxscope.agent.engine import isolation
from ctxscope.agent.engine.point import KILL_AT_ENV, ModelChoice

CHOICE = ModelChoice(name="qwen2.5-0.5b", precision="fp32", device="cpu", tiny=True)
PROBE = {"op": "probe", "context_len": 16, "logits": "last"}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("unified", "outcome", "reason"), [(True, "oom", "OOM killer"), (False, "fault", "SIGKILL")]
)
def test_sigkill_outcome_depends_on_memory_kind(
    monkeypatch: pytest.MonkeyPatch, unified: bool, outcome: str, reason: str
) -> None:
    monkeypatch.setattr(isolation, "is_unified_memory_device", lambda: unified)
    with isolation.Worker(env={KILL_AT_ENV: "16"}) as worker:
        assert worker.request({"op": "load", "choice": asdict(CHOICE)}, 120)["outcome"] == "ok"
        reply = worker.request(PROBE, 120)
        assert not worker.alive
    assert reply["outcome"] == outcome
    assert reason in reply["error"]


def test_a_failing_job_is_a_fault_and_ends_the_worker() -> None:
    with isolation.Worker() as worker:
        reply = worker.request(PROBE, 60)  # a probe before any model was loaded
        assert reply["outcome"] == "fault" and "KeyError" in reply["error"]
        assert not worker.alive  # already gone: a runner replaces it before the next point
        assert worker.request(PROBE, 5)["outcome"] == "fault"  # the worker exited; the parent says so
        proc = worker.proc
    assert proc is not None and proc.stdin is not None and proc.stdin.closed  # no pipe left open
