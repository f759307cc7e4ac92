"""Live events from the ingest thread to the web's SSE clients.

Ingest calls `on_commit()` from its writer thread after each commit; events are batched and handed to
the asyncio loop with `call_soon_threadsafe` (one wake-up per burst, not per record), then fanned out
to every subscriber's bounded queue. A subscriber too slow to keep up loses its oldest batches and
is told how many events it missed, so a page can refetch instead of showing a silent hole.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from ctxscope.collector.store.base import BatchOutcome


@dataclass(eq=False)
class Subscription:
    queue: asyncio.Queue[list[dict[str, Any]]]
    missed: int = 0


@dataclass
class LiveHub:
    """Thread-safe hand-off of events (JSON-ready dicts) into one asyncio loop's subscribers."""

    max_batches: int = 256
    _loop: asyncio.AbstractEventLoop | None = None
    _pending: list[dict[str, Any]] = field(default_factory=list)
    _scheduled: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _subscribers: set[Subscription] = field(default_factory=set)

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Deliver into `loop` (the web server's); events published before binding are dropped."""
        self._loop = loop

    def publish(self, events: Iterable[dict[str, Any]]) -> None:
        """Queue events for every subscriber; callable from any thread, never blocks on clients."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with self._lock:
            self._pending.extend(events)
            if self._scheduled or not self._pending:
                return
            self._scheduled = True
        try:
            loop.call_soon_threadsafe(self._flush)
        except RuntimeError:  # loop closed between the check and the call
            with self._lock:
                self._scheduled = False

    def on_commit(self, outcome: BatchOutcome) -> None:
        """The ingest's after-commit callback: tell the pages which devices have new data."""
        self.publish(events_for(outcome, time.time_ns()))

    def _flush(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
            self._scheduled = False
        if not batch:
            return
        # One event per device per flush, the earliest: its arrival time is the honest latency start.
        firsts: dict[str, dict[str, Any]] = {}
        for event in batch:
            firsts.setdefault(event["device"], event)
        batch = list(firsts.values())
        for sub in self._subscribers:
            if sub.queue.full():
                dropped = sub.queue.get_nowait()
                sub.missed += len(dropped)
            sub.queue.put_nowait(batch)

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[Subscription]:
        sub = Subscription(asyncio.Queue(self.max_batches))
        self._subscribers.add(sub)
        try:
            yield sub
        finally:
            self._subscribers.discard(sub)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)


def events_for(outcome: BatchOutcome, arrived_ns: int) -> list[dict[str, Any]]:
    """One `changed` event per device whose data a committed batch touched (duplicates-only
    batches change nothing and raise none); pages refetch what they show of that device."""
    if not (outcome.stored or outcome.state_applied):
        return []
    return [{"kind": "changed", "device": d, "arrived_ns": arrived_ns} for d in sorted(outcome.devices)]
