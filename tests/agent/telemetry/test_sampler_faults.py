"""The sampler outlives its faults: a sensor that raises anything, and its own process killed."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from ctxscope.agent.telemetry import sampler as sampler_module
from ctxscope.agent.telemetry.ring import Chunk
from ctxscope.agent.telemetry.sampler import Sampler
from tests.agent.telemetry.faulty_backends import Raising, Steady
from tests.support import wait_for

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def spawned_processes_import_the_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sampler's process is spawned and unpickles these backends from `tests`; it gets the parent's
    sys.path, to which the repository goes last (first, its `ctxscope/` folder would hide the package)."""
    monkeypatch.setattr(sys, "path", [*sys.path, str(REPO)])


class Chunks:
    def __init__(self) -> None:
        self.seen: list[Chunk] = []
        self.lock = threading.Lock()

    def __call__(self, chunk: Chunk) -> None:
        with self.lock:
            self.seen.append(chunk)

    def count(self) -> int:
        with self.lock:
            return len(self.seen)


def test_a_sensor_that_raises_anything_is_reported_and_the_others_go_on() -> None:
    chunks = Chunks()
    sampler = Sampler([Raising(), Steady()], 50.0, chunks)
    sampler.start()
    try:
        wait_for(lambda: sampler.error_count > 150 and chunks.count() > 20, 20, "errors and chunks")
    finally:
        sampler.stop()
    assert sampler.restarts == 0
    assert len(sampler.errors) == sampler_module.MAX_ERRORS < sampler.error_count  # kept bounded
    assert sampler.errors[-1] == "raising: read failed: KeyError: 'rail'"
    assert {c.source for c in chunks.seen} == {"steady"}


def test_a_killed_sampler_process_is_started_again_and_stops_cleanly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sampler_module, "RESTART_FIRST_S", 0.2)
    chunks = Chunks()
    sampler = Sampler([Steady()], 50.0, chunks)
    sampler.start()
    try:
        wait_for(lambda: chunks.count() > 5, 20, "first chunks")
        first = sampler.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)  # as the kernel's OOM killer would
        wait_for(lambda: sampler.restarts == 1 and sampler.pid != first, 20, "a restart")
        after = chunks.count()
        wait_for(lambda: chunks.count() > after + 5, 20, "chunks from the new process")
        assert "exit code -9" in sampler.errors[-1] and "started again" in sampler.errors[-1]
    finally:
        began = time.monotonic()
        sampler.stop()
    assert time.monotonic() - began < 15  # a killed waiter once made stop() hang for good
