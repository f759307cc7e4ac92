"""The daemon survives its own failures: a refused command's ack stays small, a failing status or
plan checker ends neither the command handling nor the run loop."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ctxscope.agent.daemon import ACK_REASON_CHARS, Daemon
from ctxscope.agent.transport.spool import Spool
from ctxscope.shared.codec import decode
from ctxscope.shared.messages import Command


class FlakyStatus:
    """Stands in for the link; its first `busy` status raises."""

    def __init__(self) -> None:
        self.states: list[str] = []

    def set_status(self, state: str, run_id: str | None = None, detail: str | None = None) -> None:
        self.states.append(state)
        if self.states.count("busy") == 1 and state == "busy":
            raise RuntimeError("broker client bug")


def command(command_id: str, args: dict[str, Any]) -> Command:
    return Command(
        device="dev-1", stream="0123456789abcdef", seq=1, ts=time.time_ns(), command_id=command_id,
        name="run_plan", args=args, expires_at=time.time_ns() + 60 * 10**9,
    )  # fmt: skip


def acks(spool: Spool) -> list[Any]:
    return [m for m in (decode(r.payload) for r in spool.oldest(10_000)) if m.kind == "command_ack"]


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "spool.sqlite", "dev-1")


def test_a_refusal_does_not_echo_a_megabyte_of_input(spool: Spool) -> None:
    daemon = Daemon(FlakyStatus(), spool, torch_device="cpu")  # type: ignore[arg-type]
    huge = "m" * 1_000_000
    daemon.handle_command(command("big", {"plan": {"name": "x", "models": [huge], "context_lengths": [16]}}))
    (ack,) = acks(spool)
    assert not ack.accepted
    assert len(ack.reason) < ACK_REASON_CHARS + 40
    assert spool.stats().backlog_bytes < 10_000


def test_a_plan_checker_bug_refuses_that_command_with_a_reason(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(raw: object) -> Any:
        raise TypeError("checker bug")

    monkeypatch.setattr("ctxscope.agent.daemon.parse_plan_argument", broken)
    daemon = Daemon(FlakyStatus(), spool, torch_device="cpu")  # type: ignore[arg-type]
    daemon.handle_command(command("c1", {"plan": {}}))
    (ack,) = acks(spool)
    assert not ack.accepted and ack.reason == "the plan could not be checked: TypeError"


def test_the_run_loop_survives_a_failing_status_and_runs_the_next_plan(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    link = FlakyStatus()
    daemon = Daemon(link, spool, torch_device="cpu")  # type: ignore[arg-type]
    ran: list[str] = []

    def fake_run_plan(plan: Any, sink: Any, **kwargs: Any) -> Any:
        ran.append(kwargs["run_id"])
        if len(ran) == 1:
            daemon.stopping.set()
        return SimpleNamespace(points_ok=1, points_failed=0)

    monkeypatch.setattr("ctxscope.agent.daemon.run_plan", fake_run_plan)
    plan = 'name = "p"\nmodels = ["qwen2.5-0.5b"]\ncontext_lengths = [16]\ntiny = true\n'
    daemon.handle_command(command("c1", {"plan": plan}))
    daemon.handle_command(command("c2", {"plan": plan}))
    first, second = acks(spool)
    daemon.run_until_stopped()
    # the first plan's `busy` raised: it did not run, the loop lived on and ran the second
    assert ran == [second.run_id] and first.accepted and second.accepted
    assert link.states == ["busy", "busy", "online"]
