"""Topic builder and parser: `ctxscope/v1/<device>/<channel>` and `ctxscope/v1/<device>/cmd/<name>`;
and, outside every device's topics, `ctxscope/presence/v1/<collector>`: each collector's retained
presence, which agents read to hold their records while no collector is there to take them."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from ctxscope.shared.ids import InvalidIdentifier, validate_device_id
from ctxscope.shared.version import SCHEMA_VERSION, TOPIC_ROOT


class Channel(str, Enum):
    """The per-device topic channels."""

    STATUS = "status"
    META = "meta"
    TELEMETRY = "telemetry"
    RUN = "run"
    RESULT = "result"
    LOG = "log"
    CMD = "cmd"


PREFIX = f"{TOPIC_ROOT}/v{SCHEMA_VERSION}"
PRESENCE_PREFIX = f"{TOPIC_ROOT}/presence/v{SCHEMA_VERSION}"
PRESENCE_FILTER = f"{PRESENCE_PREFIX}/+"
MAX_COLLECTOR_ID = 128


class InvalidTopic(ValueError):
    """A topic outside the contract."""


@dataclass(frozen=True)
class Topic:
    device: str
    channel: Channel
    command: str | None = None

    def __str__(self) -> str:
        base = f"{PREFIX}/{self.device}/{self.channel.value}"
        return f"{base}/{self.command}" if self.channel is Channel.CMD else base


def topic_for(device: str, channel: Channel) -> str:
    """The topic of a device's data channel (not for commands: see `command_topic`)."""
    if channel is Channel.CMD:
        raise InvalidTopic("command topics need a command name: use command_topic()")
    return str(Topic(validate_device_id(device), channel))


def command_topic(device: str, name: str) -> str:
    if not name or "/" in name or "+" in name or "#" in name:
        raise InvalidTopic(f"invalid command name {name!r}")
    return str(Topic(validate_device_id(device), Channel.CMD, name))


def subscription(channel: Channel | None = None, device: str = "+") -> str:
    """A subscription filter: every device (`+`) or one, one channel or all (`#`)."""
    if channel is None:
        return f"{PREFIX}/{device}/#"
    suffix = "/+" if channel is Channel.CMD else ""
    return f"{PREFIX}/{device}/{channel.value}{suffix}"


def parse_topic(topic: str) -> Topic:
    """Parse a contract topic; raise InvalidTopic for anything else (other roots, versions, channels)."""
    parts = topic.split("/")
    if len(parts) < 4 or f"{parts[0]}/{parts[1]}" != PREFIX:
        raise InvalidTopic(f"topic {topic!r} is not under {PREFIX}/")
    try:
        device = validate_device_id(parts[2])
        channel = Channel(parts[3])
    except (InvalidIdentifier, ValueError) as exc:
        raise InvalidTopic(f"topic {topic!r}: {exc}") from exc
    if channel is Channel.CMD:
        if len(parts) != 5 or not parts[4]:
            raise InvalidTopic(f"command topic {topic!r} needs exactly one command name")
        return Topic(device, channel, parts[4])
    if len(parts) != 4:
        raise InvalidTopic(f"topic {topic!r} has extra levels")
    return Topic(device, channel)


def presence_topic(collector: str) -> str:
    """The retained presence topic of a collector (by its MQTT client id)."""
    if not 1 <= len(collector) <= MAX_COLLECTOR_ID or any(c in collector for c in "/+#"):
        raise InvalidTopic(f"invalid collector id {collector!r} for a presence topic")
    return f"{PRESENCE_PREFIX}/{collector}"


def presence_collector(topic: str) -> str | None:
    """The collector a presence topic names; None for any other topic."""
    head, _, collector = topic.rpartition("/")
    if head != PRESENCE_PREFIX or not 1 <= len(collector) <= MAX_COLLECTOR_ID or "+" in collector:
        return None
    return collector
