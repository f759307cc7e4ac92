"""Collector ingest: a persistent MQTT session feeding one writer thread that validates, stores, acks.

The session survives collector restarts (MQTT 3.1.1 `clean_session=False`, fixed client id) and
messages are acknowledged manually, only after the transaction that stores them has committed: a
collector that crashes gets every un-acknowledged message again, and the store's (device, stream,
seq) key turns the redelivered ones into counted duplicates.

Bad data and a failing store are told apart. A message that fails validation (or whose validation
raises anything at all) is counted in `rejects` with its reason and acknowledged, so it is never
redelivered; it never stops ingest and is never half-written. A store that raises, whatever the
exception, gets the same batch again with backoff, and nothing is acknowledged until it commits: the
failure shows in the counters, the log (rate-limited) and `health()`, which the dashboard shows.
The inbox between paho's thread and the writer is bounded (see `inbox.py`).

Once subscribed, the collector announces itself on its retained presence topic; its last will and
its clean stop say it is offline. Agents hold their records in their own spools while no collector
is online, so an absent collector's queue does not grow in the broker's memory (`shared/topics.py`).
The presence is published at QoS 0: a broker whose ACL predates it refuses it silently, where a
refused QoS 1 publish would cost the connection.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt

from ctxscope.collector.inbox import Inbox
from ctxscope.collector.security.cert_watch import CertWatch
from ctxscope.collector.store import Accepted, BatchOutcome, Rejected, Store
from ctxscope.ratelog import RateLimitedLog
from ctxscope.shared.codec import DecodeError, decode, encode, shorten
from ctxscope.shared.ids import DEVICE_ID_PATTERN
from ctxscope.shared.messages import CHANNEL_OF_KIND, CollectorPresence
from ctxscope.shared.topics import Channel, InvalidTopic, parse_topic, presence_topic, subscription

log = logging.getLogger(__name__)
DATA_CHANNELS = tuple(c for c in Channel if c is not Channel.CMD)
# Retained state (status, meta) goes to every collector; a shared subscription would not get it.
STATE_CHANNELS = frozenset({Channel.STATUS, Channel.META})
SHARE_GROUP = re.compile(r"[A-Za-z0-9_-]{1,100}")
STORE_RETRY_S = 1.0
STORE_RETRY_MAX_S = 30.0
STORE_STALL_S = 5.0  # a write taking longer is shown as stalled (health, the fleet page's banner)
BATCH_MAX_BYTES = 16 * 1024**2
GATHER_POLL_S = 0.02
BAD_TOPIC_KEY = "(a topic outside the contract)"  # the rejects row of every such topic

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
    store_errors: int = 0  # failed batch writes (each retried, nothing acknowledged meanwhile)
    store_upkeep_failures: int = 0  # failed passes of the store's merge or retention (store/upkeep.py)

    def add(self, outcome: BatchOutcome, reasons: Sequence[str]) -> None:
        self.stored += outcome.stored
        self.duplicates += outcome.duplicates
        self.state_applied += outcome.state_applied
        self.state_stale += outcome.state_stale
        self.rejected.update(reasons)
        self.batches += 1


@dataclass(frozen=True)
class StoreFailure:
    """The store has been failing since `since_ns` (wall clock); `last_error` is its latest error."""

    since_ns: int
    last_error: str


def validate(topic: str, payload: bytes) -> Accepted | Rejected:
    """Check a message against the contract: topic, codec, device of the topic, channel of the kind."""
    try:
        parsed = parse_topic(topic)
    except InvalidTopic as exc:
        # One key for every such topic: a topic is up to 64 KiB of anyone's choosing (on a broker
        # without the site's ACL), too long for PostgreSQL's index of `rejects` (whose failing insert
        # held every later record back) and, one row per distinct topic, a way to grow the store.
        return Rejected(BAD_TOPIC_KEY, "bad_topic", shorten(str(exc)), payload)
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
        tls_ca: str | None = None,
        batch_max: int = 500,
        inbox: Inbox[mqtt.MQTTMessage] | None = None,
        on_commit: CommitCallback | None = None,
        share_group: str | None = None,
    ) -> None:
        if share_group is not None and not SHARE_GROUP.fullmatch(share_group):
            raise ValueError(f"share group {share_group!r}: use 1-100 of A-Z, a-z, 0-9, '_' and '-'")
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
        self.share_group = share_group
        self._counters = IngestCounters()
        self._counters_lock = threading.Lock()
        self._inbox: Inbox[mqtt.MQTTMessage] = inbox or Inbox()
        self._store_failure: StoreFailure | None = None
        # When the write in progress began (monotonic s): a locked database blocks a write, not fails
        # it, for as long as SQLite's busy timeout, which health() must show too.
        self._writing_since: float | None = None
        # Since when paho's thread has waited for room in the full inbox (monotonic s): it answers no
        # ping meanwhile, so the broker may drop the connection while `connected` still says true.
        self._reading_blocked_since: float | None = None
        self.cert_watch = CertWatch(f"{host}:{port}")
        self._log = RateLimitedLog(log)
        self._connected = threading.Event()
        self._disconnected = threading.Event()
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
            self._client.tls_set(ca_certs=tls_ca)
        # Under the site's broker the user name is the client id (`use_username_as_clientid`).
        self._identity = username or client_id
        self._presence_topic = presence_topic(self._identity)
        self._client.will_set(self._presence_topic, self._presence(online=False), qos=1, retain=True)
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
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
        return self._inbox.stats().messages

    @property
    def broker_cert_not_after_ns(self) -> int | None:
        """When the broker's TLS certificate expires, as it presented it at the latest connection."""
        return self.cert_watch.not_after_ns

    def counters(self) -> IngestCounters:
        """A snapshot of the counters."""
        with self._counters_lock:
            return dataclasses.replace(
                self._counters,
                rejected=Counter(self._counters.rejected),
                store_upkeep_failures=self.store.upkeep.failures,
            )

    def health(self) -> dict[str, Any]:
        """JSON-ready state for the dashboard: connection, store failure (if any), inbox fill, counters."""
        inbox = self._inbox.stats()
        now = time.monotonic()
        writing_s = None if self._writing_since is None else now - self._writing_since
        blocked_s = None if self._reading_blocked_since is None else now - self._reading_blocked_since
        with self._counters_lock:
            failure = self._store_failure
            counters = self._counters
            return {
                "connected": self.connected,
                "store_failing": failure is not None,
                "store_failing_since_ns": failure.since_ns if failure else None,
                "store_error": failure.last_error if failure else None,
                # a write blocked this long (a lock another process holds): null when none is
                "store_stalled_s": round(writing_s, 1) if writing_s and writing_s >= STORE_STALL_S else None,
                "store_errors": counters.store_errors,
                "store_upkeep_failing": [dataclasses.asdict(fault) for fault in self.store.upkeep.faults()],
                "received": counters.received,
                "stored": counters.stored,
                "duplicates": counters.duplicates,
                "rejected": dict(counters.rejected),
                "inbox_messages": inbox.messages,
                "inbox_bytes": inbox.bytes,
                "inbox_full_waits": inbox.full_waits,
                "inbox_blocked_s": round(blocked_s, 1) if blocked_s and blocked_s >= STORE_STALL_S else None,
                **self.cert_watch.health(),
            }

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop taking messages, store and ack those already taken, say offline, then disconnect."""
        self._stopping.set()
        if self._writer.is_alive():
            self._writer.join(timeout_s)
        connected = self._client.is_connected()
        if connected:  # a clean disconnect sends no will
            self._publish_presence(online=False).wait_for_publish(min(timeout_s, 5.0))
            self._disconnected.clear()
        self._client.disconnect()
        if connected:
            # Wait for the DISCONNECT to go out: a socket left open would be closed whenever this object
            # is collected, and the broker would then publish the will, perhaps after a newer collector
            # of this identity has said it is online.
            self._disconnected.wait(min(timeout_s, 5.0))
        self._client.loop_stop()

    # -- paho callbacks -------------------------------------------------------------------------

    def _on_connect_fail(self, _client: mqtt.Client, _u: Any) -> None:
        # paho calls this inside the `except OSError` around its connect: the exception is the reason
        error = sys.exc_info()[1]
        self._log.warning(
            "unreachable",
            "collector cannot reach the broker %s:%s (%s); retrying every 1-30 s",
            self.host,
            self.port,
            f"{type(error).__name__}: {error}" if error else "connection failed",
        )

    def _on_connect(self, client: mqtt.Client, _u: Any, flags: Any, reason: mqtt.ReasonCode, _p: Any) -> None:
        if reason.is_failure:
            log.warning("broker %s:%s refused the collector: %s", self.host, self.port, reason)
            return
        log.info(
            "collector connected to %s:%s (session present: %s)", self.host, self.port, flags.session_present
        )
        client.subscribe([(self._filter(channel), 1) for channel in DATA_CHANNELS])
        self.cert_watch.connected(client)

    def _presence(self, online: bool) -> bytes:
        return encode(CollectorPresence(collector=self._identity, online=online, ts=time.time_ns()))

    def _publish_presence(self, online: bool) -> mqtt.MQTTMessageInfo:
        return self._client.publish(self._presence_topic, self._presence(online), qos=0, retain=True)

    def _filter(self, channel: Channel) -> str:
        """The channel's topic filter; with a share group, records are split between the group's
        collectors (`$share/GROUP/...`) while every collector still gets the retained state."""
        plain = subscription(channel)
        if self.share_group is None or channel in STATE_CHANNELS:
            return plain
        return f"$share/{self.share_group}/{plain}"

    def _on_subscribe(
        self, _c: mqtt.Client, _u: Any, _mid: int, reasons: list[mqtt.ReasonCode], _p: Any
    ) -> None:
        refused = [str(r) for r in reasons if r.is_failure]
        if refused:
            log.error("broker %s:%s refused the collector's subscriptions: %s", self.host, self.port, refused)
            return
        self._connected.set()
        if not self._stopping.is_set():
            self._publish_presence(online=True)  # only now does the broker keep records for this session

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: mqtt.ReasonCode, _p: Any) -> None:
        self._connected.clear()
        self._disconnected.set()
        if reason.is_failure:
            # Rate-limited: two collectors started with one identity take the session from each other
            # about once a second, for as long as both run.
            self._log.warning(
                "disconnected",
                "collector lost the broker (%s); reconnecting (if this repeats, another client may be"
                " connected with this collector's identity and client id)",
                reason,
            )

    def _on_message(self, _client: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        # Blocks while the inbox is full: paho stops reading and the broker keeps the rest queued.
        # After stop() begins, leave new messages un-acked: the broker keeps them for the next session.
        size = len(message.payload)
        while not self._stopping.is_set():
            if self._inbox.put(message, size, timeout_s=0.5):
                self._reading_blocked_since = None
                return
            if self._reading_blocked_since is None:
                self._reading_blocked_since = time.monotonic() - 0.5

    # -- the writer thread ----------------------------------------------------------------------

    def _write_loop(self) -> None:
        while True:
            self.cert_watch.check()  # a collector left running learns of an expiring broker certificate
            batch = self._inbox.take(self.batch_max, BATCH_MAX_BYTES, timeout_s=0.1)
            if not batch:
                if self._stopping.is_set():
                    return
                continue
            try:
                self._gather(batch)
                if not self._commit(batch):
                    return  # stopping while the store fails: the un-acked batch will be redelivered
            except Exception as exc:  # a bug here must not end ingest; the batch comes back on reconnect
                self._log.exception(
                    "writer", "ingest writer: a batch of %d failed: %s", len(batch), shorten(repr(exc))
                )

    def _gather(self, batch: list[mqtt.MQTTMessage]) -> None:
        """Add what arrives within the store's `commit_gather_s` (up to `batch_max`): a store that
        stages records shares its staging tables' last pages among a commit's records, so a commit
        of 300 costs about the same pages as one of 3 (`store/staging.py`)."""
        deadline = time.monotonic() + self.store.commit_gather_s
        size = sum(len(m.payload) for m in batch)
        while len(batch) < self.batch_max and size < BATCH_MAX_BYTES:
            left = deadline - time.monotonic()
            if left <= 0 or self._stopping.is_set():
                return
            time.sleep(min(left, GATHER_POLL_S))
            more = self._inbox.take(self.batch_max - len(batch), BATCH_MAX_BYTES - size, timeout_s=0)
            batch += more
            size += sum(len(m.payload) for m in more)

    def _commit(self, batch: list[mqtt.MQTTMessage]) -> bool:
        payloads = [bytes(m.payload) for m in batch]
        items = [self._checked(m, payload) for m, payload in zip(batch, payloads, strict=True)]
        outcome = self._store_until_it_works(items)
        if outcome is None:
            return False
        for m in batch:
            self._client.ack(m.mid, m.qos)
        rejects = [item for item in items if isinstance(item, Rejected)]
        for reject in rejects:
            self._log.warning(  # %r: a device's text (a metric's name) may hold a line break
                f"reject {reject.reason}",
                "rejected a message on %r: %s (%r)",
                reject.topic,
                reject.reason,
                reject.detail,
            )
        with self._counters_lock:
            self._counters.received += len(batch)
            self._counters.add(outcome, [r.reason for r in rejects])
        if self.on_commit is not None:
            try:
                self.on_commit(outcome)
            except Exception:
                self._log.exception("on_commit", "on_commit callback failed")
        return True

    def _checked(self, message: mqtt.MQTTMessage, payload: bytes) -> Accepted | Rejected:
        """Validate one message; an unexpected error rejects it (and only it) as `internal_error`."""
        topic = _topic_of(message)
        try:
            return _retained(validate(topic, payload), message.retain)
        except Exception as exc:
            self._log.exception("validate", "validating a message on %r failed", shorten(topic))
            return Rejected(
                shorten(topic), "internal_error", shorten(f"{type(exc).__name__}: {exc}"), payload
            )

    def _store_until_it_works(self, items: list[Accepted | Rejected]) -> BatchOutcome | None:
        """Write the batch, retrying with backoff for as long as the store fails; None if stopped.

        Any exception from the store means the store is failing, not the data: every message here was
        validated, and a valid message is one the store can hold. Nothing is acknowledged meanwhile, and
        the failure is visible in the counters, the log and `health()`.
        """
        delay = STORE_RETRY_S
        while True:
            self._writing_since = time.monotonic()
            try:
                outcome = self.store.write_batch(items)
            except Exception as exc:
                self._writing_since = None
                self._store_failed(exc, len(items), delay)
                if self._stopping.wait(delay):
                    return None
                delay = min(delay * 2, STORE_RETRY_MAX_S)
                continue
            self._writing_since = None
            if self._store_failure is not None:
                with self._counters_lock:
                    self._store_failure = None
                log.warning("the store works again; the held batch of %d is stored", len(items))
            return outcome

    def _store_failed(self, error: Exception, size: int, delay: float) -> None:
        detail = shorten(f"{type(error).__name__}: {error}")
        with self._counters_lock:
            self._counters.store_errors += 1
            if self._store_failure is None:
                self._store_failure = StoreFailure(time.time_ns(), detail)
            else:
                self._store_failure = dataclasses.replace(self._store_failure, last_error=detail)
        self._log.warning(
            "store", "store failed (%s); %d messages held un-acked, retry in %.0f s", detail, size, delay
        )


def _topic_of(message: mqtt.MQTTMessage) -> str:
    try:
        return message.topic
    except UnicodeDecodeError:  # paho decodes the topic on access; brokers should refuse such topics
        return bytes(message._topic).decode("utf-8", "replace")


def _retained(item: Accepted | Rejected, retained: bool) -> Accepted | Rejected:
    return dataclasses.replace(item, retained=True) if retained and isinstance(item, Accepted) else item
