"""The login throttle: failures limited per client address and per user name, paced so that parallel
attempts gain nothing, in bounded memory; on a clock the test moves."""

from __future__ import annotations

import logging

import pytest

from ctxscope.collector.web import login_throttle
from ctxscope.collector.web.login_throttle import (
    ADDRESS_FAILURES,
    ADDRESS_REFILL_S,
    FAILURE_DELAY_S,
    USER_FAILURES,
    USER_REFILL_S,
    FailureBudget,
    LoginThrottle,
    client_key,
    retry_after,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _fail(throttle: LoginThrottle, clock: Clock, address: str, user: str = "alice") -> float:
    """One attempt that, if let in, fails and takes as long as the dashboard's answer to it."""
    wait_s = throttle.admit(address, user)
    if wait_s == 0:
        clock.now += FAILURE_DELAY_S
    return wait_s


def test_parallel_attempts_from_one_address_get_one_check_and_the_rest_a_wait() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock)
    waits = [throttle.admit("203.0.113.7", "alice") for _ in range(18)]
    assert waits[0] == 0 and all(0 < w <= FAILURE_DELAY_S for w in waits[1:])
    assert throttle.admit("198.51.100.9", "alice") == 0  # another address is not held up


def test_an_address_that_keeps_failing_is_locked_out_then_gets_one_try_per_refill() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock)
    assert [_fail(throttle, clock, "203.0.113.7") for _ in range(ADDRESS_FAILURES)] == [0] * ADDRESS_FAILURES
    locked = throttle.admit("203.0.113.7", "bob")  # another name from the same address: still locked
    assert ADDRESS_REFILL_S - ADDRESS_FAILURES * FAILURE_DELAY_S <= locked <= ADDRESS_REFILL_S
    assert retry_after(locked) == str(int(ADDRESS_REFILL_S - ADDRESS_FAILURES * FAILURE_DELAY_S))
    clock.now += locked
    assert _fail(throttle, clock, "203.0.113.7") == 0
    assert throttle.admit("203.0.113.7", "alice") == pytest.approx(ADDRESS_REFILL_S - FAILURE_DELAY_S)


def test_a_right_password_or_an_attempt_without_a_check_is_refunded() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock)
    for _ in range(ADDRESS_FAILURES * 3):
        assert throttle.admit("203.0.113.7", "alice") == 0
        throttle.refund("203.0.113.7", "alice")
    assert throttle.admit("203.0.113.7", "alice") == 0


def test_a_guesser_on_many_addresses_is_stopped_by_the_user_name() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock)
    for n in range(USER_FAILURES):
        assert _fail(throttle, clock, f"10.0.{n // 250}.{n % 250}") == 0
    assert throttle.admit("10.9.9.9", "alice") > USER_REFILL_S / 2  # a fresh address, the same name
    assert throttle.admit("10.9.9.9", "bob") == 0  # another name is not locked


def test_a_flood_from_one_address_never_locks_the_user_out_elsewhere() -> None:
    """The user name's budget leaks faster than one address may fill it, however long it tries."""
    clock = Clock()
    throttle = LoginThrottle(clock)
    for _ in range(6 * 3600):  # six hours of one attempt a second from one address
        _fail(throttle, clock, "203.0.113.7")
        assert throttle.per_user.wait_s("alice", clock.now) == 0
        clock.now += 1.0
    assert throttle.admit("198.51.100.9", "alice") == 0


def test_names_no_user_can_have_take_no_room_and_an_ipv6_client_counts_by_its_64() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock)
    for name in ("x" * 65, "a b", "é", "", "\nfake log line"):
        assert _fail(throttle, clock, "2001:db8::1", name) == 0
    assert not throttle.per_user._clear_at  # only the address paid
    assert throttle.admit("2001:db8::ffff:2", "alice") > FAILURE_DELAY_S  # the same /64: locked out
    assert client_key("2001:db8::ffff:2") == "2001:db8::/64"
    assert [client_key(a) for a in ("203.0.113.7", "::ffff:203.0.113.7", "")] == [
        "203.0.113.7",
        "::ffff:203.0.113.7",
        "",
    ]


def test_each_table_keeps_at_most_max_keys_forgetting_the_least_recently_charged() -> None:
    budget = FailureBudget("address", burst=1, refill_s=60.0, max_keys=3)
    for n in range(5):
        budget.charge(f"10.0.0.{n}", 0.0)
    assert [budget.wait_s(f"10.0.0.{n}", 1.0) > 0 for n in range(5)] == [False, False, True, True, True]
    with pytest.raises(ValueError):
        FailureBudget("address", burst=0, refill_s=60.0, max_keys=3)


def test_lockouts_are_logged_at_a_limited_rate(caplog: pytest.LogCaptureFixture, monkeypatch) -> None:
    clock = Clock()
    throttle = LoginThrottle(clock)
    monkeypatch.setattr(login_throttle._log, "_windows", {})  # no budget left over from other tests
    for _ in range(ADDRESS_FAILURES):
        _fail(throttle, clock, "203.0.113.7")
    with caplog.at_level(logging.WARNING, logger=login_throttle.__name__):
        for _ in range(100):
            assert throttle.admit("203.0.113.7", "alice") > 0
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 5 and "by address '203.0.113.7'" in lines[0]
