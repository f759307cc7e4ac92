"""The store's upkeep: its background passes (the SQLite staging merge, retention) and whether they
fail. A failed pass loses nothing (records stay staged or raw, and the pass is tried again), but one
that keeps failing lets staging or raw telemetry grow without end, so it is shown where ingest's own
faults are: `/api/ingest`, the fleet page's banner and `/metrics`."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

MAX_ERROR_CHARS = 300


@dataclass(frozen=True)
class UpkeepFault:
    task: str  # "merge", "retention"
    error: str  # the latest failure, as "Type: message"
    since_ns: int  # wall time of the first failure since the task last succeeded
    failures: int  # failed passes since then


class Upkeep:
    """The latest fault of each upkeep task until it next succeeds, and the failed passes in all."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: dict[str, UpkeepFault] = {}
        self.failures = 0

    def failed(self, task: str, exc: BaseException) -> None:
        error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
        with self._lock:
            self.failures += 1
            before = self._faults.get(task)
            since = before.since_ns if before else time.time_ns()
            self._faults[task] = UpkeepFault(task, error, since, (before.failures if before else 0) + 1)

    def succeeded(self, task: str) -> None:
        with self._lock:
            self._faults.pop(task, None)

    def faults(self) -> list[UpkeepFault]:
        with self._lock:
            return sorted(self._faults.values(), key=lambda f: f.task)
