"""Rate-limited logging and the guard that keeps a thread alive through any exception.

A hostile or broken peer can make the same warning fire thousands of times a second; `RateLimitedLog`
writes at most `burst` lines per key per `interval_s` and then one line saying how many it held back.
`guard()` wraps a callback (a paho callback, one iteration of a thread loop) so that an unexpected
exception is logged through such a limiter and never propagates into the thread that called it.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from ctxscope.shared.codec import shorten

P = ParamSpec("P")
R = TypeVar("R")


class RateLimitedLog:
    """At most `burst` records per key every `interval_s`; the rest are counted and summarized."""

    def __init__(self, logger: logging.Logger, burst: int = 5, interval_s: float = 10.0) -> None:
        self.logger = logger
        self.burst = burst
        self.interval_s = interval_s
        self._lock = threading.Lock()
        # key -> (window start, lines written in it, lines held back in it)
        self._windows: dict[str, tuple[float, int, int]] = {}

    def log(
        self,
        level: int,
        key: str,
        msg: str,
        *args: object,
        exc_info: bool = False,
        now: float | None = None,
        stacklevel: int = 2,
    ) -> bool:
        """Log unless `key` is over its budget; returns whether the line was written. `stacklevel`
        names the caller in the record, as in `logging`."""
        now = time.monotonic() if now is None else now
        with self._lock:
            start, written, held = self._windows.get(key, (now, 0, 0))
            if now - start >= self.interval_s:
                if held:
                    self.logger.log(level, "%d more like '%s' in the last %.0f s", held, key, now - start)
                start, written, held = now, 0, 0
            if written >= self.burst:
                self._windows[key] = (start, written, held + 1)
                return False
            self._windows[key] = (start, written + 1, held)
        self.logger.log(level, msg, *args, exc_info=exc_info, stacklevel=stacklevel)
        return True

    def warning(self, key: str, msg: str, *args: object) -> bool:
        return self.log(logging.WARNING, key, msg, *args, stacklevel=3)

    def exception(self, key: str, msg: str, *args: object) -> bool:
        return self.log(logging.ERROR, key, msg, *args, exc_info=True, stacklevel=3)


def guard(
    limiter: RateLimitedLog, what: str, on_error: Callable[[Exception], None] | None = None
) -> Callable[[Callable[P, R | None]], Callable[P, R | None]]:
    """Decorator: call the function; on any Exception log it (rate-limited), call `on_error`, return None."""

    def wrap(fn: Callable[P, R | None]) -> Callable[P, R | None]:
        @functools.wraps(fn)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> R | None:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                limiter.exception(what, "%s failed: %s", what, shorten(repr(exc)))
                if on_error is not None:
                    try:
                        on_error(exc)
                    except Exception:
                        limiter.exception(f"{what} error handler", "%s: the error handler failed too", what)
                return None

        return guarded

    return wrap
