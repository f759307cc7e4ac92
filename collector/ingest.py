"""Collector ingest: a persistent MQTT session feeding one writer thread that validates, stores, acks.

The session survives collector restarts (MQTT 3.1.1 `clean_session=False`, fixed client id) and
messages are acknowledged manually, only after the transaction that stores them has committed: a
collector that crashes gets every un-acknowledged message again, and the store's (device, stream,
seq) key turns the redelivered ones into counted duplicates. A message that fails validation is
counted in `rejects` with its reason and acknowledged; it never stops ingest and is never half-written.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt

from ctxscope.collector.store import Accepted, BatchOutcome, Rejected, Store
from ctxscope.shared.codec import DecodeError, decode
from ctxscope.shared.ids import DEVICE_ID_PATTERN
from ctxscope.shared.messages import CHANNEL_OF_KIND
from ctxscope.shared.topics import Channel, InvalidTopic, parse_topic, subscription

log = logging.getLogger(__name__)
DATA_CHANNELS = tuple(c for c in Channel if c is not Channel.CMD)
STORE_RETRY_S = 1.0

# Not a valid device id (it has '_'), so no device can connect with it and take over the session.
DEFAULT_CLIENT_ID = "ctxscope_collector"

CommitCallback = Callable[[BatchOutcome], None]


@dataclass
class IngestCounters:
    """Messages taken from the broker and what became of them; `rejected` counts by reason."""

    received: int = 0
    stored: int = 0
    duplicates: int = 0
    state_applied: int = 0
    state_stale: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    batches: int = 0
    store_errors: int = 0

    def add(self, outcome: BatchOutcome, reasons: Sequence[str]) -> None:
        self.stored += outcome.stored
        self.duplicates += outcome.duplicates
        self.state_applied += outcome.state_applied
        self.state_stale += outcome.state_stale
        self.rejected.update(reasons)
        self.batches += 1


def validate(topic: str, payload: bytes) -> Accepted | Rejected:
    """Check a message against the contract: topic, codec, device of the topic, channel of the kind."""
    try:
        parsed = parse_topic(topic)
    except InvalidTopic as exc:
        return Rejected(topic, "bad_topic", str(exc), payload)
    if parsed.channel is Channel.CMD:
        return Rejected(topic, "unexpected_channel", "commands go to devices, not to the collector", payload)
    try:
        message = decode(payload)
    except DecodeError as exc:
        return Rejected(topic, exc.reason, exc.detail, payload)
    if message.device != parsed.device:
        return Rejected(
            topic, "device_mismatch", f"message of {message.device!r} on {parsed.device!r}'s topic", payload
        )
    if CHANNEL_OF_KIND[message.kind] is not parsed.channel:
        return Rejected(
            topic, "wrong_channel", f"a {message.kind!r} message on {parsed.channel.value!r}", payload
        )
    return Accepted(topic, message)


class Ingest:
    """Subscribes to every device's data channels and stores what arrives. Counters are live."""

    def __init__(
        self,
        store: Store,
        host: str,
        port: int,
        client_id: str = DEFAULT_CLIENT_ID,
        *,
        username: str | None = None,
        password: str | None = None,
        tls: bool = False,
        batch_max: int = 500,
        on_commit: CommitCallback | None = None,
    ) -> None:
        if DEVICE_ID_PATTERN.fullmatch(client_id):
            raise ValueError(
                f"collector client id {client_id!r} is also a valid device id, so a device could take over"
                " the collector's session: include a character outside a-z, 0-9 and '-', such as '_'"
            )
        self.store = store
        self.host = host
        self.port = port
        self.batch_max = batch_max
        self.on_commit = on_commit
        self._counters = IngestCounters()
        self._counters_lock = threading.Lock()
        self._inbox: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self._connected = threading.Event()
        self._stopping = threading.Event()
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
            clean_session=False,
            manual_ack=True,
        )
        if username is not None:
            self._client.username_pw_set(username, password)
        if tls:
            self._client.tls_set()
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._writer = threading.Thread(target=self._write_loop, name="ctxscope-ingest-writer", daemon=True)

    def start(self) -> None:
        self._writer.start()
        self._client.connect_async(self.host, self.port, keepalive=30)
        self._client.loop_start()

    def wait_connected(self, timeout_s: float) -> bool:
        """Wait until the broker has granted the subscriptions: from then on nothing sent is missed."""
        return self._connected.wait(timeout_s)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def backlog(self) -> int:
        """Messages taken from the broker and not yet stored."""
        return self._inbox.qsize()

    def counters(self) -> IngestCounters:
        """A snapshot of the counters."""
        with self._counters_lock:
            return dataclasses.replace(self._counters, rejected=Counter(self._counters.rejected))

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop taking messages, store and ack those already taken, then disconnect."""
        self._stopping.set()
        if self._writer.is_alive():
            self._writer.join(timeout_s)
        self._client.disconnect()
        self._client.loop_stop()

    # -- paho callbacks -------------------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, _u: Any, flags: Any, reason: mqtt.ReasonCode, _p: Any) -> None:
        if reason.is_failure:
            log.warning("broker %s:%s refused the collector: %s", self.host, self.port, reason)
            return
        log.info(
            "collector connected to %s:%s (session present: %s)", self.host, self.port, flags.session_present
        )
        client.subscribe([(subscription(channel), 1) for channel in DATA_CHANNELS])

    def _on_subscribe(
        self, _c: mqtt.Client, _u: Any, _mid: int, reasons: list[mqtt.ReasonCode], _p: Any
    ) -> None:
        refused = [str(r) for r in reasons if r.is_failure]
        if refused:
            log.error("broker %s:%s refused the collector's subscriptions: %s", self.host, self.port, refused)
            return
        self._connected.set()

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: mqtt.ReasonCode, _p: Any) -> None:
        self._connected.clear()
        if reason.is_failure:
            log.warning("collector lost the broker (%s); reconnecting", reason)

    def _on_message(self, _client: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        # After stop() begins, leave new messages un-acked: the broker keeps them for the next session.
        if not self._stopping.is_set():
            self._inbox.put(message)

    # -- the writer thread ----------------------------------------------------------------------

    def _write_loop(self) -> None:
        while True:
            try:
                first = self._inbox.get(timeout=0.1)
            except queue.Empty:
                if self._stopping.is_set():
                    return
                continue
            batch = [first]
            while len(batch) < self.batch_max:
                try:
                    batch.append(self._inbox.get_nowait())
                except queue.Empty:
                    break
            if not self._commit(batch):
                return  # stopping while the store fails: the un-acked batch will be redelivered

    def _commit(self, batch: list[mqtt.MQTTMessage]) -> bool:
        payloads = [bytes(m.payload) for m in batch]
        items = [
            _retained(validate(m.topic, payload), m.retain)
            for m, payload in zip(batch, payloads, strict=True)
        ]
        while True:
            try:
                outcome, rejects = self._store_items(items, payloads)
                break
            except Exception:
                log.exception("store failed; retrying the batch of %d in %.0f s", len(items), STORE_RETRY_S)
                with self._counters_lock:
                    self._counters.store_errors += 1
                if self._stopping.wait(STORE_RETRY_S):
                    return False
        for m in batch:
            self._client.ack(m.mid, m.qos)
        for reject in rejects:
            log.warning("rejected a message on %s: %s (%s)", reject.topic, reject.reason, reject.detail)
        with self._counters_lock:
            self._counters.received += len(batch)
            self._counters.add(outcome, [r.reason for r in rejects])
        if self.on_commit is not None:
            try:
                self.on_commit(outcome)
            except Exception:
                log.exception("on_commit callback failed")
        return True

    def _store_items(
        self, items: list[Accepted | Rejected], payloads: list[bytes]
    ) -> tuple[BatchOutcome, list[Rejected]]:
        """One transaction for the batch; if it fails, store item by item so one bad message (say, a
        string PostgreSQL cannot hold) is rejected alone instead of blocking the others."""
        try:
            return self.store.write_batch(items), [i for i in items if isinstance(i, Rejected)]
        except Exception as batch_error:
            if self.store.is_transient(batch_error) or (len(items) == 1 and isinstance(items[0], Rejected)):
                raise  # the caller retries the whole batch; nothing is acked meanwhile
            log.warning("batch of %d failed (%s); storing one by one", len(items), batch_error)
        total = BatchOutcome()
        rejects: list[Rejected] = []
        for item, payload in zip(items, payloads, strict=True):
            try:
                single = self.store.write_batch([item])
            except Exception as exc:
                # A busy or unreachable database is no reason to reject a valid message.
                if isinstance(item, Rejected) or self.store.is_transient(exc):
                    raise
                item = Rejected(item.topic, "store_error", f"{type(exc).__name__}: {exc}"[:500], payload)
                single = self.store.write_batch([item])
            if isinstance(item, Rejected):
                rejects.append(item)
            _merge(total, single)
        return total, rejects


def _retained(item: Accepted | Rejected, retained: bool) -> Accepted | Rejected:
    return dataclasses.replace(item, retained=True) if retained and isinstance(item, Accepted) else item


def _merge(total: BatchOutcome, part: BatchOutcome) -> None:
    total.stored += part.stored
    total.duplicates += part.duplicates
    total.state_applied += part.state_applied
    total.state_stale += part.state_stale
    total.rejected += part.rejected
    total.devices |= part.devices
