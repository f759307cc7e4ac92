"""The fleet view's answers, computed in a process of their own beside the collector's ingest.

A whole-fleet answer at 3,000 devices is some 70 ms of pure Python (every device's row read, decoded
and summarized) and the fleet page asks for one or more each second. In the collector's process it
holds the interpreter's lock that ingest's writer and paho's network thread need after every SQLite
step and socket read: with the fleet answered there, a collector fell 5-20 s behind 3,000 devices;
without the answers it kept up (results/collector/scale/README.md). Here a single worker process
opens the same store read-only (no migration, no writer, no checkpoint thread of its own), answers
one request at a time and returns the answer as JSON bytes, which the web thread only relays. One
worker bounds what any number of open dashboards cost to one core.

A worker that dies (killed, out of memory) is replaced at the next request, which is answered by the
new worker; the replacement is logged. The worker is started with `spawn` (the collector's process
runs threads, which `fork` does not copy safely), so a program that starts a Dashboard from its own
script must do so under `if __name__ == "__main__":`, as every multiprocessing program must; the
`ctxscope` command does. At 3,000 devices the worker's resident memory was 91 MiB.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

import pydantic_core

from ctxscope.collector.readmodel import views
from ctxscope.collector.readmodel.source import FleetSource
from ctxscope.collector.store import Store, open_store

T = TypeVar("T")
log = logging.getLogger(__name__)
ANSWER_TIMEOUT_S = 60.0

# The worker process's own store connection and channel cache (set by `_open`).
_store: Store | None = None
_channels: views.ChannelCache | None = None


def answer_json(value: Any) -> bytes:
    """JSON as the dashboard writes its answers: a non-finite number as null, as FastAPI writes it
    (browsers' JSON.parse refuses NaN)."""
    return pydantic_core.to_json(value, inf_nan_mode="null")


def fleet_answer(source: FleetSource, cache: views.ChannelCache | None, devices: Sequence[str]) -> bytes:
    """`views.fleet` as the JSON `/api/fleet` answers, computed wherever it is called."""
    return answer_json(views.fleet(source, cache, devices))


def _open(store_url: str) -> None:
    # Ctrl-C in a terminal reaches the whole process group: the collector stops its worker itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    global _store, _channels
    _store = open_store(store_url, read_only=True)
    _channels = views.ChannelCache()


def _fleet_json(devices: tuple[str, ...]) -> bytes:
    assert _store is not None, "the worker's store was not opened"
    return fleet_answer(_store, _channels, devices)


def _pid() -> int:
    return os.getpid()


class FleetWorker:
    """`fleet_json(devices)` answered by a worker process over the store at `store_url`."""

    def __init__(self, store_url: str) -> None:
        self.store_url = store_url
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def start(self) -> FleetWorker:
        """Start the worker and wait until it has opened the store (a few seconds: it imports the
        read model), so that the first request does not wait for it."""
        with self._lock:
            self._pool = self._new_pool()
            self._pool.submit(_pid).result(ANSWER_TIMEOUT_S)
        return self

    def _new_pool(self) -> ProcessPoolExecutor:
        # spawn, not fork: the collector's process has running threads (paho, the writer, uvicorn)
        return ProcessPoolExecutor(
            1, mp_context=multiprocessing.get_context("spawn"), initializer=_open, initargs=(self.store_url,)
        )

    def pid(self) -> int:
        """The worker process's id (it changes when a dead worker is replaced)."""
        return self._run(_pid)

    def fleet_json(self, devices: Sequence[str] = ()) -> bytes:
        """`views.fleet` over the store, for every device or the named ones, as JSON."""
        return self._run(_fleet_json, tuple(devices))

    def _run(self, fn: Callable[..., T], *args: object) -> T:
        with self._lock:
            pool = self._pool
        if pool is None:
            raise RuntimeError("the fleet worker is not started")
        try:
            return pool.submit(fn, *args).result(ANSWER_TIMEOUT_S)
        except BrokenProcessPool:
            log.warning("the fleet view's worker process died; starting a new one")
            with self._lock:
                if self._pool is pool:
                    self._pool = self._new_pool()
                pool = self._pool
            if pool is None:
                raise RuntimeError("the fleet worker was stopped") from None
            return pool.submit(fn, *args).result(ANSWER_TIMEOUT_S)

    def stop(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
