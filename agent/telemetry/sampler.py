"""The sampler: a separate process that polls the backends and ships columnar chunks back.

It runs outside the inference process (multiprocessing `spawn`) so that a Python-heavy decode loop
cannot starve it of the GIL. Each backend is polled on its own grid at min(rate, its max rate);
every sample is stamped with `time.monotonic_ns()`, the system-wide clock the engine's phase
markers use. Chunks go back over a queue every `flush_s`; a thread in the parent hands them on.

A board runs unattended for months, so the sampler must outlive its faults: a backend's read that
raises anything is reported and polled again; a sampler process that dies (an uncaught fault, the
kernel's OOM killer) is started again by the parent's thread, after a pause that doubles up to
RESTART_MAX_S, with a fresh queue and stop pipe (a killed process may leave either unusable: an
`mp.Event` with a killed waiter blocks every later `set()`). What went wrong is kept in `errors`, the
last MAX_ERRORS of them, and counted in `error_count`.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import queue as queue_mod
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from ctxscope.agent.telemetry.base import Backend, TelemetryError
from ctxscope.agent.telemetry.ring import Chunk

log = logging.getLogger(__name__)
_START_TIMEOUT_S = 60.0
MAX_ERRORS = 100
RESTART_FIRST_S = 1.0
RESTART_MAX_S = 60.0
# A sampler process that ran this long before it died was healthy: its next restart waits the least.
HEALTHY_RUN_S = 60.0


class _Columns:
    """Rows of one backend gathered into columns until the next flush."""

    def __init__(self, source: str, metrics: Sequence[str]) -> None:
        self.source = source
        self.metrics = list(metrics)
        self.t: list[int] = []
        self.cols: dict[str, list[float]] = {m: [] for m in self.metrics}

    def add(self, stamp: int, values: dict[str, float]) -> None:
        self.t.append(stamp)
        for m in self.metrics:
            self.cols[m].append(values.get(m, np.nan))

    def take(self) -> Chunk | None:
        if not self.t:
            return None
        chunk = Chunk(
            self.source,
            np.asarray(self.t, dtype=np.int64),
            {m: np.asarray(v, dtype=np.float64) for m, v in self.cols.items()},
        )
        self.t = []
        self.cols = {m: [] for m in self.metrics}
        return chunk


def _sample_loop(
    backends: list[Backend], rate_hz: float, flush_s: float, out: Any, stop: Connection, ready: Any
) -> None:
    """Body of the sampler process; it ends when the parent writes to or closes `stop`."""
    opened: list[Backend] = []
    for backend in backends:
        try:
            backend.open()
            opened.append(backend)
        except Exception as exc:  # a backend's fault is its own: the others are still sampled
            out.put(("error", backend.name, f"open failed: {type(exc).__name__}: {exc}"))
    periods = {b.name: int(1e9 / min(rate_hz, b.max_rate_hz)) for b in opened}
    columns = {b.name: _Columns(b.name, sorted(b.metrics())) for b in opened}
    now = time.monotonic_ns()
    due = dict.fromkeys(periods, now)
    last_flush = now
    ready.set()
    try:
        while not stop.poll(0):
            now = time.monotonic_ns()
            for backend in opened:
                if now < due[backend.name]:
                    continue
                try:
                    for stamp, values in backend.drain():
                        columns[backend.name].add(stamp, values)
                except Exception as exc:  # reported, and polled again at its next turn
                    out.put(("error", backend.name, f"read failed: {type(exc).__name__}: {exc}"))
                period = periods[backend.name]
                due[backend.name] += period
                if due[backend.name] <= now:  # fell behind: restart the grid rather than burst
                    due[backend.name] = now + period
            if now - last_flush >= flush_s * 1e9:
                _flush(columns, out)
                last_flush = now
            wait_ns = min(due.values(), default=now + int(flush_s * 1e9)) - time.monotonic_ns()
            if wait_ns > 0:
                stop.poll(wait_ns / 1e9)
    finally:
        _flush(columns, out)
        for backend in opened:
            try:
                backend.close()
            except Exception:  # closing is best effort: the process ends next
                continue
        out.put(("done",))


def _flush(columns: dict[str, _Columns], out: Any) -> None:
    for col in columns.values():
        chunk = col.take()
        if chunk is not None:
            out.put(("chunk", chunk))


class Sampler:
    """Parent-side handle: starts the process, receives its chunks on a thread (which starts the process
    again if it dies), stops it."""

    def __init__(
        self,
        backends: Sequence[Backend],
        rate_hz: float,
        on_chunk: Callable[[Chunk], None],
        flush_s: float = 0.1,
    ) -> None:
        if rate_hz <= 0:
            raise ValueError("rate_hz must be positive")
        self.backends = list(backends)
        self.rate_hz = rate_hz
        self.flush_s = flush_s
        self.on_chunk = on_chunk
        self.errors: deque[str] = deque(maxlen=MAX_ERRORS)
        self.error_count = 0
        self.restarts = 0
        self._ctx = mp.get_context("spawn")
        self._process: Any = None
        self._thread: threading.Thread | None = None
        self._stop_send: Connection | None = None
        self._queue: Any = None
        self._started_at = 0.0
        self._ready: Any = None
        self._stopping = threading.Event()

    def start(self) -> None:
        self._stopping.clear()
        ready = self._spawn()
        self._thread = threading.Thread(target=self._receive, name="ctxscope-telemetry-rx", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not ready.wait(0.1):
            if not self._process.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise TelemetryError("the telemetry sampler process did not start")

    def _spawn(self) -> Any:
        """A sampler process with a queue and stop pipe of its own; its ready event."""
        self._queue = self._ctx.Queue()
        stop_receive, self._stop_send = self._ctx.Pipe(duplex=False)
        ready = self._ctx.Event()
        self._process = self._ctx.Process(
            target=_sample_loop,
            args=(self.backends, self.rate_hz, self.flush_s, self._queue, stop_receive, ready),
            name="ctxscope-telemetry",
            daemon=True,
        )
        self._process.start()
        stop_receive.close()  # the child's end: once the child is gone, the pipe is too
        self._started_at = time.monotonic()
        # held until the next spawn: a collected event's semaphore is gone before the child opens it
        self._ready = ready
        return ready

    @property
    def pid(self) -> int | None:
        """Process id of the sampler while it runs (to account for its CPU time)."""
        return self._process.pid if self._process is not None else None

    def _note(self, error: str) -> None:
        self.errors.append(error)
        self.error_count += 1

    def _receive(self) -> None:
        """Hand chunks on until the sampler is stopped; start the process again whenever it dies."""
        pause = RESTART_FIRST_S
        while True:
            try:
                message = self._queue.get(timeout=0.5)
            except queue_mod.Empty:
                message = None
            except Exception as exc:  # a queue left broken by a killed process: the process is gone
                message = None
                self._note(f"sampler: its queue failed: {type(exc).__name__}: {exc}")
                self._process.join(5)
            if message is not None and message[0] == "chunk":
                try:
                    self.on_chunk(message[1])
                except Exception:  # the consumer's fault must not end the receiving thread
                    log.exception("telemetry chunk of %s could not be handed on", message[1].source)
                continue
            if message is not None and message[0] == "error":
                self._note(f"{message[1]}: {message[2]}")
                continue
            if self._stopping.is_set():
                if message is not None or not self._process.is_alive():
                    return  # "done": every chunk taken was handed on
                continue
            if message is None and self._process.is_alive():
                continue
            self._process.join(5)
            ran_s = time.monotonic() - self._started_at
            pause = RESTART_FIRST_S if ran_s >= HEALTHY_RUN_S else pause
            self._note(
                f"sampler: the process ended (exit code {self._process.exitcode}) after {ran_s:.0f} s;"
                f" started again in {pause:g} s"
            )
            log.warning("telemetry %s", self.errors[-1])
            if self._stopping.wait(pause):
                return
            pause = min(pause * 2, RESTART_MAX_S)
            self.restarts += 1
            self._spawn()
            if self._stopping.is_set() and self._stop_send is not None:  # stop() came as it started
                with contextlib.suppress(OSError):
                    self._stop_send.send(True)

    def stop(self) -> None:
        """Stop sampling; returns once every chunk taken has been handed to `on_chunk`."""
        if self._process is None:
            return
        self._stopping.set()
        if self._stop_send is not None:
            with contextlib.suppress(OSError):  # the process is gone already: nothing to tell it
                self._stop_send.send(True)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        if self._stop_send is not None:
            self._stop_send.close()
        self._process = None
        self._thread = None
        self._stop_send = None
