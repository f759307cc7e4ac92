"""How often one client address and one user name may fail to log in.

`LoginGate` bounds how many password checks run at once, for the whole dashboard; it does not stop a
patient guesser, and a flood fills it for everyone. The throttle stops guessing per source:
- an address may start an attempt only `FAILURE_DELAY_S` after its previous one, so parallel
  requests do not multiply its rate (a wait after each failure alone holds back one request, not
  its address);
- an address may fail `ADDRESS_FAILURES` times in a burst, then once more every `ADDRESS_REFILL_S`;
- a user name may fail `USER_FAILURES` times in a burst (from any addresses), then once more every
  `USER_REFILL_S`: a guesser spread over many addresses is slowed too. It leaks faster than one
  address can fill it, so a flood from one address never locks the user out: the real user, from
  their own address, still gets in.
An attempt is charged as a failure when it is let in, before its check, so parallel attempts see the
charge at once; it is refunded when no check ran or the password was right. A refused attempt is
not charged and costs no check. Each table keeps at most `MAX_TRACKED` keys (the least recently
charged forgotten first), so a flood from many addresses or names cannot grow memory.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable

from ctxscope.collector.web.auth import USER_PATTERN
from ctxscope.ratelog import RateLimitedLog

FAILURE_DELAY_S = 1.0
ADDRESS_FAILURES = 5
ADDRESS_REFILL_S = 300.0
USER_FAILURES = 20
USER_REFILL_S = 60.0
MAX_TRACKED = 10_000
IPV6_PREFIX = 64  # one subscriber usually holds a whole /64: its addresses count as one

_log = RateLimitedLog(logging.getLogger(__name__), burst=5, interval_s=60.0)


class FailureBudget:
    """Failures per key as a leaky bucket: `burst` at once, then one more every `refill_s`.

    A key's whole state is the time its charged failures are all forgiven (the generic cell rate
    algorithm), one float; at most `max_keys` keys are kept. Not thread-safe: the dashboard calls it
    from its event loop only."""

    def __init__(self, name: str, burst: int, refill_s: float, max_keys: int) -> None:
        if burst < 1 or refill_s <= 0 or max_keys < 1:
            raise ValueError("a failure budget needs a burst of one or more, a refill time and room")
        self.name = name
        self.burst = burst
        self.refill_s = refill_s
        self.max_keys = max_keys
        self._clear_at: OrderedDict[str, float] = OrderedDict()

    def wait_s(self, key: str, now: float) -> float:
        """Seconds until `key` may be charged again; 0 when it may now."""
        clear_at = self._clear_at.get(key, now)
        return max(0.0, clear_at - now - (self.burst - 1) * self.refill_s)

    def charge(self, key: str, now: float) -> None:
        self._clear_at[key] = max(self._clear_at.get(key, now), now) + self.refill_s
        self._clear_at.move_to_end(key)
        if len(self._clear_at) > self.max_keys:
            self._clear_at.popitem(last=False)

    def refund(self, key: str) -> None:
        if key in self._clear_at:
            self._clear_at[key] -= self.refill_s


class LoginThrottle:
    """The per-address pace and failure budgets and the per-user failure budget of the login form."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_keys: int = MAX_TRACKED) -> None:
        self.clock = clock
        self.pace = FailureBudget("pace of address", 1, FAILURE_DELAY_S, max_keys)
        self.per_address = FailureBudget("address", ADDRESS_FAILURES, ADDRESS_REFILL_S, max_keys)
        self.per_user = FailureBudget("user", USER_FAILURES, USER_REFILL_S, max_keys)

    def admit(self, address: str, user: str) -> float:
        """0 when an attempt from `address` as `user` may check its password (it is then charged: see
        `refund`); otherwise the seconds until it may, and nothing is charged."""
        now = self.clock()
        charges = self._charges(address, user)
        wait_s = 0.0
        for budget, key in charges:
            wait = budget.wait_s(key, now)
            if wait > 0 and budget is not self.pace:  # a pace wait is a second at most: no lockout
                _log.warning(
                    "login lockout",
                    "login refused for %.0f s: too many failed logins by %s %r",
                    wait,
                    budget.name,
                    key,
                )
            wait_s = max(wait_s, wait)
        if wait_s == 0:
            for budget, key in charges:
                budget.charge(key, now)
        return wait_s

    def refund(self, address: str, user: str) -> None:
        """Take back an admitted attempt's charge: its check did not run, or it passed."""
        for budget, key in self._charges(address, user):
            budget.refund(key)

    def _charges(self, address: str, user: str) -> list[tuple[FailureBudget, str]]:
        client = client_key(address)
        charges = [(self.pace, client), (self.per_address, client)]
        # A name no user can have never logs in: its address alone pays, and such names take no room
        # in the table (nor reach the log).
        if USER_PATTERN.fullmatch(user):
            charges.append((self.per_user, user))
        return charges


def retry_after(wait_s: float) -> str:
    """A Retry-After value (whole seconds, at least 1) for a wait."""
    return str(max(1, math.ceil(wait_s)))


def client_key(address: str) -> str:
    """The key a client address is counted under: itself, or for IPv6 its /64 network."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is None:
        return str(ipaddress.IPv6Network((ip, IPV6_PREFIX), strict=False))
    return address
