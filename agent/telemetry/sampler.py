"""The sampler: a separate process that polls the backends and ships columnar chunks back.

It runs outside the inference process (multiprocessing `spawn`) so that a Python-heavy decode loop
cannot starve it of the GIL. Each backend is polled on its own grid at min(rate, its max rate);
every sample is stamped with `time.monotonic_ns()`, the system-wide clock the engine's phase
markers use. Chunks go back over a queue every `flush_s`; a thread in the parent hands them on.
"""

from __future__ import annotations

import multiprocessing as mp
import queue as queue_mod
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ctxscope.agent.telemetry.base import Backend, TelemetryError
from ctxscope.agent.telemetry.ring import Chunk

_START_TIMEOUT_S = 60.0


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
    backends: list[Backend], rate_hz: float, flush_s: float, out: Any, stop: Any, ready: Any
) -> None:
    """Body of the sampler process."""
    opened: list[Backend] = []
    for backend in backends:
        try:
            backend.open()
            opened.append(backend)
        except (TelemetryError, OSError, ImportError) as exc:
            out.put(("error", backend.name, f"open failed: {exc}"))
    periods = {b.name: int(1e9 / min(rate_hz, b.max_rate_hz)) for b in opened}
    columns = {b.name: _Columns(b.name, sorted(b.metrics())) for b in opened}
    now = time.monotonic_ns()
    due = dict.fromkeys(periods, now)
    last_flush = now
    ready.set()
    try:
        while not stop.is_set():
            now = time.monotonic_ns()
            for backend in opened:
                if now < due[backend.name]:
                    continue
                try:
                    for stamp, values in backend.drain():
                        columns[backend.name].add(stamp, values)
                except (TelemetryError, OSError) as exc:
                    out.put(("error", backend.name, f"read failed: {exc}"))
                period = periods[backend.name]
                due[backend.name] += period
                if due[backend.name] <= now:  # fell behind: restart the grid rather than burst
                    due[backend.name] = now + period
            if now - last_flush >= flush_s * 1e9:
                _flush(columns, out)
                last_flush = now
            wait_ns = min(due.values(), default=now + int(flush_s * 1e9)) - time.monotonic_ns()
            if wait_ns > 0:
                stop.wait(wait_ns / 1e9)
    finally:
        _flush(columns, out)
        for backend in opened:
            try:
                backend.close()
            except (TelemetryError, OSError):
                continue
        out.put(("done",))


def _flush(columns: dict[str, _Columns], out: Any) -> None:
    for col in columns.values():
        chunk = col.take()
        if chunk is not None:
            out.put(("chunk", chunk))


class Sampler:
    """Parent-side handle: starts the process, receives its chunks on a thread, stops it."""

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
        self.errors: list[str] = []
        self._ctx = mp.get_context("spawn")
        self._process: Any = None
        self._thread: threading.Thread | None = None
        self._stop: Any = None
        self._queue: Any = None

    def start(self) -> None:
        self._queue = self._ctx.Queue()
        self._stop = self._ctx.Event()
        ready = self._ctx.Event()
        self._process = self._ctx.Process(
            target=_sample_loop,
            args=(self.backends, self.rate_hz, self.flush_s, self._queue, self._stop, ready),
            name="ctxscope-telemetry",
            daemon=True,
        )
        self._process.start()
        self._thread = threading.Thread(target=self._receive, name="ctxscope-telemetry-rx", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not ready.wait(0.1):
            if not self._process.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise TelemetryError("the telemetry sampler process did not start")

    @property
    def pid(self) -> int | None:
        """Process id of the sampler while it runs (to account for its CPU time)."""
        return self._process.pid if self._process is not None else None

    def _receive(self) -> None:
        while True:
            try:
                message = self._queue.get(timeout=0.5)
            except queue_mod.Empty:
                if self._process is None or not self._process.is_alive():
                    return
                continue
            if message[0] == "chunk":
                self.on_chunk(message[1])
            elif message[0] == "error":
                self.errors.append(f"{message[1]}: {message[2]}")
            else:
                return

    def stop(self) -> None:
        """Stop sampling; returns once every chunk taken has been handed to `on_chunk`."""
        if self._process is None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._process = None
        self._thread = None
