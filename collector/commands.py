"""Commands to devices: publish a `run_plan` (or any command) over MQTT, and `collector send-plan`.

Commands go to `ctxscope/v1/<device>/cmd/<name>` with QoS 1, never retained, and carry an expiry
(`expires_at`, wall clock) after which the agent ignores them; the agent answers with a CommandAck
on its `run` channel, which `send-plan` waits for and prints (accepted, or the reason of a refusal).
"""

from __future__ import annotations

import datetime
import logging
import secrets
import threading
import time
from pathlib import Path
from typing import Any

import click
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from ctxscope.collector.plans import shipped
from ctxscope.collector.security.broker_config import OPERATOR_USER
from ctxscope.collector.security.options import access_options, resolve_access
from ctxscope.compat import tomllib
from ctxscope.hostport import HOST_PORT
from ctxscope.ratelog import RateLimitedLog
from ctxscope.shared import codec
from ctxscope.shared.broker_access import BrokerAccess, split_host_port
from ctxscope.shared.ids import InvalidIdentifier, new_stream_id, validate_device_id
from ctxscope.shared.messages import MAX_COMMAND_TTL_S, Command, CommandAck
from ctxscope.shared.topics import Channel, command_topic, subscription

_log = RateLimitedLog(logging.getLogger(__name__))
RUN_PLAN = "run_plan"
DEFAULT_TTL_S = 600.0
MAX_PLAN_BYTES = 256 * 1024
# How long an answered or unanswered command and its ack are kept after the command expired.
ACK_KEPT_S = 60.0


class PlanError(ValueError):
    """A plan the collector will not send (unreadable TOML, too large); the message says why."""


def parse_plan(text: str) -> dict[str, Any]:
    """TOML plan text -> the dict sent as the command's `plan` argument (the agent validates it)."""
    if len(text.encode()) > MAX_PLAN_BYTES:
        raise PlanError(f"plan is larger than {MAX_PLAN_BYTES} bytes")
    try:
        plan = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PlanError(f"plan is not valid TOML: {exc}") from exc
    except RecursionError as exc:  # tomllib recurses into nested arrays and inline tables
        raise PlanError("plan is nested too deeply to be read") from exc
    if not plan:
        raise PlanError("plan is empty")
    _check_plain(plan, "plan", 0)
    return plan


def _check_plain(value: Any, where: str, depth: int) -> None:
    """Refuse what the wire cannot carry before it is sent: TOML's dates and times (msgpack has no
    such type) and nesting deeper than the codec decodes."""
    if depth > codec.MAX_DEPTH:
        raise PlanError(f"{where}: nested deeper than {codec.MAX_DEPTH} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_plain(item, f"{where}.{key}", depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_plain(item, f"{where}[{index}]", depth + 1)
    elif isinstance(value, datetime.date | datetime.time):
        raise PlanError(f"{where}: a TOML date or time ({value.isoformat()}) is not a plan value")


def read_plan(plan: str) -> str:
    """The TOML text of a plan file, or of a shipped plan by name."""
    path = Path(plan)
    if path.is_file():
        return path.read_text(encoding="utf-8")
    plans = shipped()
    if plan in plans:
        return plans[plan]
    raise PlanError(
        f"{plan!r} is neither a plan file nor a shipped plan ({', '.join(sorted(plans)) or 'none'})"
    )


class CommandPublisher:
    """One MQTT connection that publishes commands and collects their acks (for the web and the CLI)."""

    def __init__(self, host: str, port: int, access: BrokerAccess | None = None) -> None:
        self.stream = new_stream_id()
        self._seq = 0
        self._lock = threading.Lock()
        # The commands this publisher sent, by id, with when they expire (ns): only their acks are
        # kept, the first of each, and both are dropped ACK_KEPT_S after the command expired. (Any
        # device may publish acks on its run channel; kept unasked, they grew without bound.)
        self._sent: dict[str, int] = {}
        self._acks: dict[str, CommandAck] = {}
        self._watched: set[str] = set()
        self._ack_event = threading.Condition(self._lock)
        self._connected = threading.Event()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"ctxscope_cmd_{self.stream}", protocol=mqtt.MQTTv311
        )
        (access or BrokerAccess()).apply(self._client)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.suppress_exceptions = True  # a callback bug is logged by paho, never ends its thread
        self._client.connect_async(host, port, keepalive=30)
        self._client.loop_start()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if not reason.is_failure:
            with self._lock:
                watched = sorted(self._watched)
            for device in watched:
                client.subscribe(subscription(Channel.RUN, device), qos=1)
            self._connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self._connected.clear()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            record = codec.decode(message.payload)
        except codec.DecodeError:
            return
        except Exception:  # whatever the bytes, paho's thread must live on
            _log.exception("on_message", "command publisher: a message on its acks topic failed")
            return
        if isinstance(record, CommandAck):
            with self._ack_event:
                # the first ack only: a redelivered copy of the command is refused as a replay, and
                # that refusal must not replace the answer to the command itself
                if record.command_id in self._sent and record.command_id not in self._acks:
                    self._acks[record.command_id] = record
                    self._ack_event.notify_all()

    def wait_connected(self, timeout_s: float) -> bool:
        return self._connected.wait(timeout_s)

    def publish(
        self,
        device: str,
        name: str,
        args: dict[str, Any],
        ttl_s: float = DEFAULT_TTL_S,
        timeout_s: float = 10.0,
    ) -> Command:
        """Publish a command (QoS 1, not retained, expiring); returns it once the broker has it."""
        validate_device_id(device)
        if not 0 < ttl_s <= MAX_COMMAND_TTL_S:
            raise ValueError(f"ttl_s {ttl_s} is outside (0, {MAX_COMMAND_TTL_S:.0f}] s: agents refuse it")
        if not self.wait_connected(timeout_s):
            raise ConnectionError("not connected to the broker")
        with self._lock:
            self._seq += 1
            seq = self._seq
            new_device = device not in self._watched
            self._watched.add(device)
        if new_device:
            # Acks come on the device's run channel; the broker handles this SUBSCRIBE before the
            # PUBLISH below (same connection, in order), so no ack can slip past.
            self._client.subscribe(subscription(Channel.RUN, device), qos=1)
        now = time.time_ns()
        self._forget_expired(now)
        command = Command(
            device=device,
            stream=self.stream,
            seq=seq,
            ts=now,
            command_id=f"cmd-{secrets.token_hex(6)}",
            name=name,
            args=args,
            expires_at=now + int(ttl_s * 1e9),
        )
        with self._lock:  # before the publish: its ack may come before publish() returns
            self._sent[command.command_id] = command.expires_at
        info = self._client.publish(command_topic(device, name), codec.encode(command), qos=1, retain=False)
        try:
            info.wait_for_publish(timeout_s)
        except (RuntimeError, ValueError) as exc:  # paho: connection lost, or its queue is full
            raise ConnectionError(f"command {command.command_id} was not sent: {exc}") from exc
        if not info.is_published():
            # paho keeps the message queued: it may still reach the device before it expires.
            raise ConnectionError(
                f"the broker did not acknowledge command {command.command_id} within {timeout_s:.0f} s; "
                f"it may still be delivered until it expires in {ttl_s:.0f} s"
            )
        return command

    def send_plan(self, device: str, plan: dict[str, Any], ttl_s: float = DEFAULT_TTL_S) -> Command:
        return self.publish(device, RUN_PLAN, {"plan": plan}, ttl_s)

    def wait_ack(self, command_id: str, timeout_s: float) -> CommandAck | None:
        deadline = time.monotonic() + timeout_s
        with self._ack_event:
            while command_id not in self._acks:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._ack_event.wait(left)
            return self._acks[command_id]

    def _forget_expired(self, now_ns: int) -> None:
        """Drop the commands (and their acks) that expired more than ACK_KEPT_S ago."""
        horizon = now_ns - int(ACK_KEPT_S * 1e9)
        with self._lock:
            for command_id in [c for c, expires in self._sent.items() if expires < horizon]:
                del self._sent[command_id]
                self._acks.pop(command_id, None)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@click.command("send-plan")
@click.argument("device")
@click.argument("plan")
@click.option(
    "--broker", type=HOST_PORT, default="127.0.0.1:1883", show_default=True, help="MQTT broker as HOST:PORT."
)
@access_options
@click.option(
    "--ttl",
    "ttl_s",
    type=click.FloatRange(1.0, MAX_COMMAND_TTL_S),
    default=DEFAULT_TTL_S,
    show_default=True,
    help="Seconds until the command expires.",
)
@click.option(
    "--wait",
    "wait_s",
    type=float,
    default=15.0,
    show_default=True,
    help="Seconds to wait for the device's ack (0: do not wait).",
)
def send_plan(
    device: str,
    plan: str,
    broker: str,
    ttl_s: float,
    wait_s: float,
    **access_params: Any,
) -> None:
    """Send PLAN (a TOML file, or the name of a plan shipped with ctxscope) to DEVICE and report whether
    the device accepted it."""
    try:
        validate_device_id(device)
        host, port = split_host_port(broker)
        body = parse_plan(read_plan(plan))
    except (InvalidIdentifier, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    access = resolve_access(host, OPERATOR_USER, "send-plan", access_params)
    publisher = CommandPublisher(host, port, access)
    try:
        try:
            command = publisher.send_plan(device, body, ttl_s)
        except ConnectionError as exc:
            raise click.ClickException(f"{broker}: {exc}") from exc
        click.echo(f"sent {command.command_id} to {device}")
        if wait_s <= 0:
            return
        ack = publisher.wait_ack(command.command_id, wait_s)
    finally:
        publisher.close()
    if ack is None:
        raise click.ClickException(f"no answer from {device} within {wait_s:g} s (is its agent serving?)")
    if not ack.accepted:
        raise click.ClickException(f"{device} refused the plan: {ack.reason}")
    click.echo(f"{device} accepted the plan: run {ack.run_id}")
