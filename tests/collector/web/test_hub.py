"""The live hub: hand-off from other threads into the loop, one event per device per flush, and
slow subscribers told how much they missed."""

from __future__ import annotations

import asyncio
import threading

from ctxscope.collector.store.base import BatchOutcome
from ctxscope.collector.web.hub import LiveHub, events_for


def test_events_only_for_batches_that_changed_something():
    assert events_for(BatchOutcome(duplicates=3, devices={"a"}), 1) == []
    events = events_for(BatchOutcome(stored=2, devices={"b", "a"}), 7)
    assert events == [
        {"kind": "changed", "device": "a", "arrived_ns": 7},
        {"kind": "changed", "device": "b", "arrived_ns": 7},
    ]


def test_commits_from_many_threads_reach_a_subscriber_coalesced_per_device():
    hub = LiveHub()

    async def scenario() -> list[dict]:
        hub.bind(asyncio.get_running_loop())
        async with hub.subscribe() as sub:

            def ingest(device: str) -> None:
                for _ in range(50):
                    hub.on_commit(BatchOutcome(stored=1, devices={device}))

            threads = [threading.Thread(target=ingest, args=(f"d{i}",)) for i in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                await asyncio.to_thread(t.join)
            seen: list[dict] = []
            while {e["device"] for e in seen} != {f"d{i}" for i in range(8)}:
                seen += await asyncio.wait_for(sub.queue.get(), 5)
            return seen

    seen = asyncio.run(scenario())
    # 400 commits arrive as far fewer events: each flush keeps the first event of each device.
    assert len(seen) < 400
    assert hub.subscribers == 0


def test_a_slow_subscriber_loses_oldest_batches_and_is_told():
    hub = LiveHub(max_batches=2)

    async def scenario() -> int:
        hub.bind(asyncio.get_running_loop())
        async with hub.subscribe() as sub:
            for i in range(5):
                hub.on_commit(BatchOutcome(stored=1, devices={f"d{i}"}))
                await asyncio.sleep(0)  # let each flush run: five separate batches
            assert sub.queue.qsize() == 2
            return sub.missed

    assert asyncio.run(scenario()) == 3
