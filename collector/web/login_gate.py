"""How many password checks the dashboard runs at once.

A check is one scrypt (N 2^15, r 8: about 32 MiB and tens of milliseconds of a core) in the worker
threads that every page and JSON answer shares. Unbounded, a flood of logins from anyone who can reach
the login form (its CSRF token comes with the form) held 1.4 GiB and stalled a logged-in operator's
`/api/fleet` from 3 ms to 17 s on two cores. The gate runs at most `checks` at a time and lets at most
`waiting` more wait for a turn; an attempt beyond that is refused at once, without a check. How often
one client or one user name may try is `login_throttle`'s, in front of the gate.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from starlette.concurrency import run_in_threadpool

LOGIN_CHECKS = 2
LOGIN_WAITING = 16


class LoginGate:
    def __init__(self, checks: int = LOGIN_CHECKS, waiting: int = LOGIN_WAITING) -> None:
        if checks < 1 or waiting < 0:
            raise ValueError("a login gate needs at least one check at a time and no negative queue")
        self.capacity = checks + waiting
        self._turns = asyncio.Semaphore(checks)
        self._inside = 0  # checking or waiting for a turn
        self.refused = 0

    async def check(self, verify: Callable[[str, str], bool], user: str, password: str) -> bool | None:
        """`verify(user, password)` in a worker thread when its turn comes; None when the gate is full
        (the attempt was refused without a check)."""
        if self._inside >= self.capacity:
            self.refused += 1
            return None
        self._inside += 1
        try:
            async with self._turns:
                return await run_in_threadpool(verify, user, password)
        finally:
            self._inside -= 1
