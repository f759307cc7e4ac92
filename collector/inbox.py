"""The bounded hand-off from the MQTT thread to the ingest writer: back-pressure instead of growth.

Bounded both by messages and by payload bytes (one message may be 8 MB). When full, `put()` blocks
the MQTT network thread: paho stops reading the socket, the broker keeps the rest in the collector's
persistent session, and memory stays flat however far the store falls behind. An empty inbox always
takes a message, so a single message larger than the byte bound still gets through.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class InboxStats:
    messages: int
    bytes: int
    max_messages: int
    max_bytes: int
    full_waits: int  # puts that found the inbox full and had to wait


class Inbox(Generic[T]):
    def __init__(self, max_messages: int = 5_000, max_bytes: int = 64 * 1024**2) -> None:
        if max_messages < 1 or max_bytes < 1:
            raise ValueError("an inbox must hold at least one message and one byte")
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._items: deque[tuple[T, int]] = deque()
        self._bytes = 0
        self._full_waits = 0
        self._cond = threading.Condition()

    def _has_room(self, size: int) -> bool:
        if not self._items:
            return True
        return len(self._items) < self.max_messages and self._bytes + size <= self.max_bytes

    def put(self, item: T, size: int, timeout_s: float) -> bool:
        """Add `item` of `size` bytes, waiting up to `timeout_s` for room; False if there was none."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            if not self._has_room(size):
                self._full_waits += 1
            while not self._has_room(size):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            self._items.append((item, size))
            self._bytes += size
            self._cond.notify_all()
            return True

    def take(self, max_messages: int, max_bytes: int, timeout_s: float) -> list[T]:
        """Up to `max_messages` items totalling at most `max_bytes` (at least one item if any arrives
        within `timeout_s`); an empty list after the timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not self._items:
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                self._cond.wait(left)
            batch: list[T] = []
            taken = 0
            while self._items and len(batch) < max_messages:
                item, size = self._items[0]
                if batch and taken + size > max_bytes:
                    break
                self._items.popleft()
                batch.append(item)
                taken += size
            self._bytes -= taken
            self._cond.notify_all()
            return batch

    def stats(self) -> InboxStats:
        with self._cond:
            return InboxStats(
                len(self._items), self._bytes, self.max_messages, self.max_bytes, self._full_waits
            )
