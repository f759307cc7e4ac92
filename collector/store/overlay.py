"""What staged records add to the device rows until they are merged: each device's newest arrival and
newest telemetry values (staging.py).

A staged record leaves its device's row alone (updating it is the page per record that staging
avoids); the merge folds them in later. Readers of the rows (the fleet view, a device's page) take
the newer of the row's values and these. Staged ids only grow and are never reused, so a reader
follows the staging tables incrementally, from the newest merged id on (merged telemetry stays in its
table, migration 6): each call reads only the rows staged since the last one
(some 1,650 a fleet request at 3,000 devices, one request every 0.5 s), and what it folded in stays
correct after the merge, since both sides keep the newer value.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from ctxscope.collector.store.writes import merge_live

Query = Callable[[str, Sequence[Any]], list[dict[str, Any]]]

NEW_ROWS = (
    "SELECT id, device, received_ns, live FROM telemetry_log WHERE id > ?"
    " UNION ALL SELECT id, device, received_ns, NULL FROM staged_results WHERE id > ?"
)


class StagedNews:
    """Per device, the newest arrival and values among the staged rows this reader has read."""

    def __init__(self) -> None:
        self._after = 0
        self._seen: dict[str, int] = {}
        self._live: dict[str, dict[str, Any]] = {}
        self._telemetry: set[str] = set()
        self._refreshed = -math.inf
        self._lock = threading.Lock()

    def refresh(self, query: Query, max_age_s: float = 0.0) -> None:
        """Read the rows staged since the last call, unless that was under `max_age_s` ago; call it
        before reading the device rows, so a merge in between shows in those (never in neither)."""
        with self._lock:
            now = time.monotonic()
            if now - self._refreshed < max_age_s:
                return
            self._refreshed = now
            if not self._after:  # merged telemetry stays in its table: start after the merged rows
                self._after = int(query("SELECT through FROM staging_merged", ())[0]["through"])
            for row in query(NEW_ROWS, (self._after, self._after)):
                device = row["device"]
                self._after = max(self._after, int(row["id"]))
                self._seen[device] = max(self._seen.get(device, 0), int(row["received_ns"]))
                if row["live"] is not None:
                    self._telemetry.add(device)
                    live = json.loads(row["live"]) if isinstance(row["live"], str) else row["live"]
                    self._live[device] = merge_live(self._live.get(device, {}), live)

    def has_telemetry(self, device: str) -> bool:
        """Whether a staged telemetry batch of `device` was read (since the first refresh): a device
        with none has none staged, and its telemetry needs none of the staging tables' full scans."""
        with self._lock:
            return device in self._telemetry

    def apply(self, row: dict[str, Any]) -> dict[str, Any]:
        """A device row (its `live` decoded) with the newer of its own and the staged values."""
        device = row["device"]
        with self._lock:
            seen, live = self._seen.get(device), self._live.get(device)
        if seen is not None and seen > row["last_seen_ns"]:
            row["last_seen_ns"] = seen
        if live:
            row["live"] = merge_live(row["live"] or {}, live)
        return row
