"""The agent's MQTT link: connection, retained birth (meta, status), last will, commands, forwarding.

paho-mqtt 2.x (callback API v2) speaking MQTT 3.1.1, so the embedded amqtt broker works too. The
client id is the device id. `connect_async()` + `loop_start()` retry the first connect and reconnect
by themselves. Credentials and TLS come from the configuration (`AgentConfig.access()`); commands
pass the CommandGuard before the handler sees them. Before every connection attempt the birth
counter (persisted in the spool) goes up and the will is re-armed with it: paho reads the will when
it builds each CONNECT packet, so a will set between connections is honoured, and the collector can
ignore a late will older than a newer birth.

The link also reads the collectors' retained presence (`ctxscope/presence/v1/+`). While every
collector it has heard of is offline, it holds its records in the spool instead of handing them to a
broker that would keep them in memory for the absent collector's session, for as long as it is
away; the forwarder resumes once one is online. A link that has heard of no collector (a broker
whose ACL predates presence, a collector that never connected) forwards as before.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Literal

import paho.mqtt.client as mqtt

from ctxscope import __version__
from ctxscope.agent.config import AgentConfig
from ctxscope.agent.transport.command_guard import CommandGuard
from ctxscope.agent.transport.forwarder import Forwarder
from ctxscope.agent.transport.spool import Spool
from ctxscope.ratelog import RateLimitedLog, guard
from ctxscope.shared.codec import DecodeError, decode, decode_presence, encode, shorten
from ctxscope.shared.messages import Command, CommandAck, DeviceMeta, Status
from ctxscope.shared.topics import (
    PRESENCE_FILTER,
    Channel,
    InvalidTopic,
    parse_topic,
    presence_collector,
    subscription,
    topic_for,
)

log = logging.getLogger(__name__)
_log = RateLimitedLog(log)

RECONNECT_MIN_S = 1
RECONNECT_MAX_S = 30
FAILURE_LOG_EVERY_S = 60.0  # a broker that stays away is logged once a minute, or when the reason changes
# A command (its plan included) larger than this is ignored unread. The collector sends plans of at
# most 256 KiB of TOML (collector/commands.py), smaller once encoded; validating a plan of megabytes
# on paho's network thread took seconds and cost the connection its keepalive.
MAX_COMMAND_BYTES = 512 * 1024
MAX_PRESENCE_BYTES = 1024  # a presence message is about 100 bytes
MAX_COLLECTORS = 1024  # collectors a link keeps the presence of (a site has a handful)
LiveState = Literal["online", "busy"]
CommandHandler = Callable[[Command], None]


def _guarded(what: str) -> Any:
    """A paho callback that logs (rate-limited) instead of raising into paho's network thread."""
    return guard(_log, f"link {what}")


def _topic_of(msg: mqtt.MQTTMessage) -> str:
    return bytes(msg._topic).decode("utf-8", "replace")


class Link:
    """Publishes the device's state and drains its spool; `close()` ends it cleanly."""

    def __init__(
        self, config: AgentConfig, spool: Spool, meta: dict[str, Any] | None = None, window: int = 20
    ):
        if spool.device != config.device:
            raise ValueError(f"spool of {spool.device!r} used for device {config.device!r}")
        self.config = config
        self.spool = spool
        self._meta: dict[str, Any] = {"agent_version": __version__, "hostname": socket.gethostname()}
        self._meta.update(meta or {})
        self._status: dict[str, Any] = {"state": "online"}
        self._birth = 0
        self._connected = threading.Event()
        self._command_handler: CommandHandler | None = None
        self._guard = CommandGuard(spool.path)
        self._rejected: Counter[str] = Counter()
        self._rejected_lock = threading.Lock()
        # collector -> whether it is online; only paho's thread touches it, the forwarder reads _holding
        self._collectors: dict[str, bool] = {}
        self._holding = False
        self.last_error: str | None = None
        self._refused = False  # this connection attempt was refused by the broker (CONNACK)
        self._failures = 0
        self._failure_logged: tuple[str, float] | None = None
        # Every connection first replays what the broker acknowledged shortly before the last one was
        # lost (for the first connection: before this process started; see Spool).
        self._replay_from_ns: int | None = time.time_ns() - spool.keep_acked_ns
        self._client = self._build_client()
        self._forwarder = Forwarder(self._client, spool, self._may_send, window)

    def _build_client(self) -> mqtt.Client:
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.config.device,
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        self.config.access().apply(client)
        client.reconnect_delay_set(min_delay=RECONNECT_MIN_S, max_delay=RECONNECT_MAX_S)
        client.on_pre_connect = self._on_pre_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        # Every callback is guarded; should one still raise, paho logs it instead of ending its thread.
        client.suppress_exceptions = True
        return client

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self._forwarder.start()
        self._client.connect_async(self.config.broker_host, self.config.broker_port, self.config.keepalive_s)
        self._client.loop_start()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout_s: float) -> bool:
        return self._connected.wait(timeout_s)

    def flush(self, timeout_s: float) -> bool:
        """Wait until every spooled record has been acknowledged by the broker."""
        self._forwarder.notify()
        return self._forwarder.wait_empty(timeout_s)

    def close(self, flush_timeout_s: float = 10.0) -> bool:
        """Flush, publish a retained `offline` (a clean disconnect sends no will), then disconnect.

        Returns whether the spool was empty when the link closed; what is left stays spooled (all of it,
        at once, while every collector is offline).
        """
        self._status = {"state": "offline"}  # a reconnect while flushing must not claim online again
        # While no collector is online the records stay spooled by design: no point waiting for them.
        flushed = self.flush(flush_timeout_s) if self._may_send() else self.spool.backlog() == 0
        # After the flush: the status counts what is left, not what was still in flight at the stop.
        if self.connected:
            info = self._publish_status()
            if info.rc == mqtt.MQTT_ERR_SUCCESS:
                info.wait_for_publish(min(flush_timeout_s, 5.0))
        self._forwarder.stop()
        self._client.disconnect()
        self._client.loop_stop()
        self._guard.close()
        return flushed

    @property
    def holding(self) -> bool:
        """True while every collector this link has heard of is offline: records stay spooled."""
        return self._holding

    def _may_send(self) -> bool:
        return self._connected.is_set() and not self.holding

    # -- state ----------------------------------------------------------------------------------

    def set_status(self, state: LiveState, run_id: str | None = None, detail: str | None = None) -> None:
        """Change the retained status; published now if connected, else at the next connect."""
        self._status = {"state": state, "run_id": run_id, "detail": detail}
        if self.connected:
            self._publish_status()

    def _publish_status(self) -> mqtt.MQTTMessageInfo:
        """The retained status with the spool's backlog and how many records it has dropped."""
        stats = self.spool.stats()
        return self._publish_state(
            Status, **self._status, birth=self._birth, backlog=stats.backlog, dropped=stats.dropped
        )

    def _publish_state(
        self, message_cls: type[Status] | type[DeviceMeta], **fields: Any
    ) -> mqtt.MQTTMessageInfo:
        message = self.spool.state_message(message_cls, **fields)
        channel = Channel.STATUS if message_cls is Status else Channel.META
        return self._client.publish(
            topic_for(self.config.device, channel), encode(message), qos=1, retain=True
        )

    # -- commands -------------------------------------------------------------------------------

    def on_command(self, handler: CommandHandler) -> None:
        """Call `handler` (on paho's thread: keep it short) for each command to this device that the
        CommandGuard admits; a refused one is answered with a CommandAck that says why."""
        self._command_handler = handler
        if self.connected:
            self._client.subscribe(subscription(Channel.CMD, self.config.device), qos=1)

    def rejected(self) -> Counter[str]:
        """Messages this link ignored, by reason (a snapshot)."""
        with self._rejected_lock:
            return Counter(self._rejected)

    @_guarded("on_message")
    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            collector = presence_collector(_topic_of(msg))
            reason = self._take_command(msg) if collector is None else self._take_presence(collector, msg)
        except Exception as exc:  # whatever the bytes, paho's thread must live on: reject this one only
            _log.exception("internal_error", "a message on %s failed: %s", _topic_of(msg), shorten(repr(exc)))
            reason = "internal_error"
        if reason is not None:
            with self._rejected_lock:
                self._rejected[reason] += 1

    def _take_presence(self, collector: str, msg: mqtt.MQTTMessage) -> str | None:
        """Note a collector's presence; the reason it was ignored, or None."""
        if len(msg.payload) > MAX_PRESENCE_BYTES:
            _log.warning("presence_too_large", "ignoring %d bytes of presence", len(msg.payload))
            return "presence_too_large"
        if not msg.payload:  # a cleared retained message: the collector's identity is gone
            self._collectors.pop(collector, None)
            self._presence_changed()
            return None
        try:
            presence = decode_presence(msg.payload)
        except DecodeError as exc:
            _log.warning(f"presence_{exc.reason}", "ignoring presence of %s: %s", shorten(collector), exc)
            return f"presence_{exc.reason}"
        if presence.collector != collector:
            _log.warning(
                "presence_misaddressed", "ignoring presence of %s on %s", presence.collector, collector
            )
            return "presence_misaddressed"
        # No ordering by `ts`: a will carries the time it was set, before the online it follows. The
        # broker delivers one topic's messages in the order they were published, which is the truth.
        if collector not in self._collectors and len(self._collectors) >= MAX_COLLECTORS:
            _log.warning(
                "presence_too_many", "ignoring presence of a collector past the first %d", MAX_COLLECTORS
            )
            return "presence_too_many"
        self._collectors[collector] = presence.online
        self._presence_changed()
        return None

    def _presence_changed(self) -> None:
        """Log a change between holding and forwarding; wake the forwarder when it may send."""
        was_holding = self._holding
        self._holding = bool(self._collectors) and not any(self._collectors.values())
        if self._holding and not was_holding:
            collectors = ", ".join(sorted(self._collectors))
            backlog = self.spool.backlog()
            log.warning(
                "no collector is online (%s): holding records in the spool (%d waiting)", collectors, backlog
            )
        elif was_holding and not self._holding:
            online = ", ".join(sorted(c for c, up in self._collectors.items() if up)) or "none known"
            log.info("collector online (%s): sending the %d held records", online, self.spool.backlog())
        if not self._holding:
            self._forwarder.notify()

    def _take_command(self, msg: mqtt.MQTTMessage) -> str | None:
        """Check one message and hand a command to the handler; the reason it was ignored, or None."""
        if len(msg.payload) > MAX_COMMAND_BYTES:  # checked before any decoding, on paho's thread
            _log.warning(
                "too_large", "ignoring %d bytes on %s: a command is at most %d", len(msg.payload), msg.topic,
                MAX_COMMAND_BYTES,
            )  # fmt: skip
            return "too_large"
        try:
            topic = parse_topic(msg.topic)
            command = decode(msg.payload)
        except InvalidTopic as exc:
            _log.warning("bad_topic", "ignoring message: %s", shorten(str(exc)))
            return "bad_topic"
        except DecodeError as exc:
            _log.warning(exc.reason, "ignoring message on %s: %s", msg.topic, exc)
            return exc.reason
        if not isinstance(command, Command) or topic.channel is not Channel.CMD:
            _log.warning(
                "not_a_command", "ignoring a %s message on %s: only commands go here", command.kind, msg.topic
            )
            return "not_a_command"
        if command.device != self.config.device or command.name != topic.command:
            _log.warning(
                "misaddressed",
                "ignoring command %s: addressed to %s/%s",
                command.command_id,
                command.device,
                command.name,
            )
            return "misaddressed"
        refusal = self._guard.admit(command, retained=msg.retain)
        if refusal is not None:
            _log.warning(
                f"refused_{refusal.kind}",
                "refused command %s (%s): %s",
                command.command_id,
                command.name,
                refusal.reason,
            )
            if refusal.kind == "replay":  # the first copy was answered: a second answer adds nothing
                return "refused_replay"
            self.spool.emit(
                CommandAck,
                command_id=command.command_id,
                name=command.name,
                accepted=False,
                reason=refusal.reason,
            )
            return f"refused_{refusal.kind}"
        if self._command_handler is None:
            return "no_handler"
        try:
            self._command_handler(command)
        except Exception:  # raised into paho, it would end the network thread: no reconnects, no forwarding
            _log.exception(
                "handler_failed", "command %s (%s) failed in its handler", command.command_id, command.name
            )
            return "handler_failed"
        return None

    # -- paho callbacks (paho's network thread) -------------------------------------------------

    @_guarded("on_pre_connect")
    def _on_pre_connect(self, client: mqtt.Client, _userdata: Any) -> None:
        self._birth = self.spool.next_birth()
        self._refused = False
        will = self.spool.state_message(Status, state="offline", birth=self._birth, detail="connection lost")
        client.will_set(topic_for(self.config.device, Channel.STATUS), encode(will), qos=1, retain=True)

    @_guarded("on_connect")
    def _on_connect(
        self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: mqtt.ReasonCode, _props: Any
    ) -> None:
        self._refused = reason.is_failure
        if reason.is_failure:
            self._connection_failed(f"refused by the broker: {reason}")
            return
        self._failures, self._failure_logged, self.last_error = 0, None, None
        log.info(
            "connected to %s:%s (birth %d)", self.config.broker_host, self.config.broker_port, self._birth
        )
        # Subscribe before announcing the birth: the broker handles this connection's packets in
        # order, so whoever sees the device online can already reach its command topic.
        try:
            client.subscribe(PRESENCE_FILTER, qos=1)
            if self._command_handler is not None:
                client.subscribe(subscription(Channel.CMD, self.config.device), qos=1)
            self._publish_state(DeviceMeta, **self._meta, birth=self._birth)
            self._publish_status()
        finally:  # whatever failed above, the spool must still drain over this connection
            if self._replay_from_ns is not None:
                self._forwarder.request_replay(self._replay_from_ns)
                self._replay_from_ns = None
            self._connected.set()
            self._forwarder.notify()

    @_guarded("on_disconnect")
    def _on_disconnect(
        self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: mqtt.ReasonCode, _props: Any
    ) -> None:
        was_connected = self._connected.is_set()
        if was_connected and self._replay_from_ns is None:
            self._replay_from_ns = time.time_ns() - self.spool.keep_acked_ns
        self._connected.clear()
        if not reason.is_failure:
            return
        if was_connected:
            self.last_error = f"disconnected: {reason}"
            log.warning("disconnected from the broker (%s); reconnecting", reason)
        elif not self._refused:
            self._connection_failed(f"the broker closed the connection before accepting it: {reason}")
        # else: paho closing the socket after a refused CONNACK ("Unspecified error"), already recorded
        # and logged with the broker's reason

    @_guarded("on_connect_fail")
    def _on_connect_fail(self, _client: mqtt.Client, _userdata: Any) -> None:
        # paho calls this inside the `except OSError` around its connect: the exception is the reason.
        error = sys.exc_info()[1]
        self._connection_failed(f"{type(error).__name__}: {error}" if error else "connection failed")

    def _connection_failed(self, reason: str) -> None:
        """Record why the broker is unreachable; log it with the next retry, at most once a minute."""
        self._failures += 1
        self.last_error = reason
        retry_s = min(RECONNECT_MIN_S * 2 ** (self._failures - 1), RECONNECT_MAX_S)
        now = time.monotonic()
        last = self._failure_logged
        if last is None or last[0] != reason or now - last[1] >= FAILURE_LOG_EVERY_S:
            self._failure_logged = (reason, now)
            log.warning(
                "cannot reach broker %s:%s (%s); attempt %d, next retry in %d s",
                self.config.broker_host,
                self.config.broker_port,
                reason,
                self._failures,
                retry_s,
            )

    @_guarded("on_publish")
    def _on_publish(self, _client: mqtt.Client, _userdata: Any, mid: int, _reason: Any, _props: Any) -> None:
        self._forwarder.on_puback(mid)
