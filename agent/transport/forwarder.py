"""The forwarder thread: drains the spool to the broker, oldest first, at QoS 1.

At most `window` records are in flight (mosquitto's default receive maximum is 20). A record leaves
the spool only once its PUBACK has arrived. While the connection is down paho keeps the in-flight
records in memory and resends them after the reconnect (with the DUP flag); after a process restart
the spool itself still holds everything that was not acknowledged, and sends it again. A replay
(`request_replay`, after a lost connection) makes recently acknowledged records pending again; they
are sent once more, and the collector counts them as duplicates.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt

from ctxscope.agent.transport.spool import Spool
from ctxscope.ratelog import RateLimitedLog

log = logging.getLogger(__name__)
_log = RateLimitedLog(log)
IDLE_POLL_S = 0.1


class Forwarder:
    def __init__(
        self, client: mqtt.Client, spool: Spool, is_connected: Callable[[], bool], window: int = 20
    ) -> None:
        if not 1 <= window <= 20:
            raise ValueError("the in-flight window must be 1..20 records")
        self._client = client
        self._spool = spool
        self._is_connected = is_connected
        self._window = window
        # mid -> seq of records published and not yet acknowledged; only this thread touches it.
        self._inflight: dict[int, int] = {}
        # PUBACKs arrive on paho's thread, under paho's lock: it only adds to this set, under a lock
        # that is never held around publish(), so the two threads cannot deadlock.
        self._acked_mids: set[int] = set()
        self._acked_lock = threading.Lock()
        self._cursor = 0  # the last seq sent; records above it are the next to go
        self._replay_since_ns: int | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ctxscope-forwarder", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def notify(self) -> None:
        """Wake the thread: the link came up, or a record was spooled."""
        self._wake.set()

    def on_puback(self, mid: int) -> None:
        """Record a PUBACK (called from paho's `on_publish`); mids of other publishes are ignored."""
        with self._acked_lock:
            self._acked_mids.add(mid)
        self._wake.set()

    def request_replay(self, since_ns: int) -> None:
        """Re-send records the broker acknowledged at or after `since_ns` (from any thread)."""
        with self._acked_lock:
            pending = self._replay_since_ns
            self._replay_since_ns = since_ns if pending is None else min(pending, since_ns)
        self._wake.set()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def wait_empty(self, timeout_s: float) -> bool:
        """Block until the spool holds nothing (every record acknowledged) or the timeout passes."""
        deadline = time.monotonic() + timeout_s
        while self._spool.backlog():
            if time.monotonic() >= deadline:
                return False
            self._wake.set()
            time.sleep(0.02)
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self._iteration()
            except Exception:  # keep forwarding after an unexpected error; the spool still has the records
                _log.exception("iteration", "forwarder iteration failed")
                busy = False
            if not busy:
                self._wake.wait(IDLE_POLL_S)
                self._wake.clear()

    def _iteration(self) -> bool:
        """Apply a requested replay, then the PUBACKs that came with or before it, then send.

        Both are taken in one step, the replay applied first: paho resends the records that were in
        flight right after the reconnect's `on_connect` (which requests the replay), and acknowledging
        one prunes acknowledged rows older than the replay window (spool.ack). After an outage longer
        than the window those are the very rows the replay is for: reaped first, they were gone."""
        with self._acked_lock:
            since_ns, self._replay_since_ns = self._replay_since_ns, None
            acked, self._acked_mids = self._acked_mids, set()
        busy = self._replay(since_ns) | self._reap(acked)
        return self._send() | busy

    def _reap(self, acked: set[int]) -> bool:
        # publish() and the registration of its mid happen on this thread before any reap, so
        # every PUBACK of a record finds its mid here.
        seqs = [seq for mid in acked if (seq := self._inflight.pop(mid, None)) is not None]
        for seq in seqs:
            self._spool.ack(seq)
        return bool(seqs)

    def _replay(self, since_ns: int | None) -> bool:
        if since_ns is None:
            return False
        replayed = self._spool.replay_since(since_ns)
        if replayed:
            log.info(
                "re-sending %d records the broker acknowledged in the %.0f s before the connection was lost",
                replayed,
                (time.time_ns() - since_ns) / 1e9,
            )
            self._cursor = 0  # the replayed records lie below the cursor; in-flight ones are skipped
        return bool(replayed)

    def _send(self) -> bool:
        room = self._window - len(self._inflight)
        if room <= 0 or not self._is_connected():
            return False
        in_flight = set(self._inflight.values())
        candidates = self._spool.oldest(room + len(in_flight), after_seq=self._cursor)
        records = [r for r in candidates if r.seq not in in_flight][:room]
        for record in records:
            info = self._client.publish(record.topic, record.payload, qos=1)
            # NO_CONN: paho queued it and sends it after the reconnect; any other error: retry later.
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                log.warning(
                    "publish of seq %d refused (%s); retrying", record.seq, mqtt.error_string(info.rc)
                )
                return False
            self._inflight[info.mid] = record.seq
            self._cursor = record.seq
        return bool(records)
