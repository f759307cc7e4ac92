"""The store's upkeep: a failing background pass is recorded until it next succeeds."""

from __future__ import annotations

import time

import pytest

from ctxscope.collector.store import Store
from ctxscope.collector.store.retention import RetentionLoop, RetentionPolicy
from ctxscope.collector.store.upkeep import Upkeep


def test_a_fault_stays_until_its_task_succeeds_and_counts_every_failed_pass() -> None:
    upkeep = Upkeep()
    upkeep.failed("merge", TypeError("one"))
    (first,) = upkeep.faults()
    upkeep.failed("merge", TypeError("two" * 200))
    upkeep.failed("retention", OSError("disk"))
    merge, retention = upkeep.faults()
    assert (merge.task, merge.failures, merge.since_ns) == ("merge", 2, first.since_ns)
    assert merge.error.startswith("TypeError: twotwo") and len(merge.error) == 300
    assert (retention.task, retention.error) == ("retention", "OSError: disk")
    upkeep.succeeded("merge")
    assert [f.task for f in upkeep.faults()] == ["retention"] and upkeep.failures == 3


def test_a_failing_retention_pass_is_the_stores_upkeep_fault(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> None:
        raise ValueError("a fault of the pass")

    monkeypatch.setattr("ctxscope.collector.store.retention.apply_retention", broken)
    loop = RetentionLoop(store, RetentionPolicy(), interval_s=0.05).start()
    try:
        deadline = time.monotonic() + 5
        while not store.upkeep.faults() and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        loop.stop()
    (fault,) = store.upkeep.faults()
    assert fault.task == "retention" and fault.error == "ValueError: a fault of the pass"
