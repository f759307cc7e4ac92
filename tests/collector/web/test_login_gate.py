"""The login gate: a flood of password checks is bounded in checks at once and in attempts waiting."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from ctxscope.collector.web.login_gate import LoginGate


def test_a_flood_runs_two_checks_at_once_and_refuses_what_does_not_fit() -> None:
    running, most = 0, 0
    lock = threading.Lock()

    def slow_check(user: str, password: str) -> bool:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        return password == "right"

    async def flood() -> list[bool | None]:
        gate = LoginGate(checks=2, waiting=3)
        attempts = [gate.check(slow_check, "alice", "wrong") for _ in range(20)]
        outcomes = await asyncio.gather(*attempts)
        assert gate.refused == 15
        # once the flood is through, a real user gets in
        assert await gate.check(slow_check, "alice", "right") is True
        return outcomes

    outcomes = asyncio.run(flood())
    assert most == 2
    assert outcomes.count(False) == 5 and outcomes.count(None) == 15


def test_a_failing_check_gives_its_place_back() -> None:
    def broken(user: str, password: str) -> bool:
        raise RuntimeError("a fault of the check")

    async def twice() -> None:
        gate = LoginGate(checks=1, waiting=0)
        for _ in range(2):
            with pytest.raises(RuntimeError):
                await gate.check(broken, "alice", "x")
        assert gate.refused == 0

    asyncio.run(twice())


def test_a_gate_without_a_check_is_refused() -> None:
    with pytest.raises(ValueError):
        LoginGate(checks=0)
