"""The mosquitto configuration and ACL that ctxscope ships: one renderer for compose, host and tests.

What each setting is for:
- `allow_anonymous false`, `password_file`, `acl_file`: every client has an identity and the ACL
  confines a device to `ctxscope/v1/<its id>/...`, to reading its own `cmd/` topics and the
  collectors' presence (`ctxscope/presence/v1/+`, which only each collector writes, its own).
- `use_username_as_clientid true`: a client's id is its user name, so nobody can take over another
  identity's session (the collector's persistent session included) without that identity's password.
- TLS listener: credentials and commands never cross the network in clear.
- `persistence` with a short `autosave_interval`: queued QoS 1 records survive a broker restart.
- `max_queued_messages 0`: the broker never drops the queue of a collector that is away (a stock
  mosquitto keeps 1,000 per session and silently drops the rest); memory is the bound, see
  docs/security.md for sizing.
- `max_packet_size`: with the queue unbounded, a device could otherwise queue messages of up to
  256 MiB each for an absent collector, which refuses anything over the contract's MAX_MESSAGE_BYTES;
  mosquitto disconnects a client that sends a bigger packet before reading its body.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ctxscope.shared.broker_access import COMMAND_USER_SUFFIX
from ctxscope.shared.codec import MAX_MESSAGE_BYTES
from ctxscope.shared.topics import PREFIX, PRESENCE_FILTER, Channel, presence_topic

COLLECTOR_USER = "ctxscope_collector"
OPERATOR_USER = "ctxscope_operator"
# A further collector identity is `ctxscope_collector_<name>`: the name has no '_', so the user never
# ends like a command user (`..._cmd`) unless the name is `cmd`, which is refused.
COLLECTOR_NAME = re.compile(r"[a-z0-9-]{1,32}")
_COMMAND_NAME = COMMAND_USER_SUFFIX.lstrip("_")
AUTOSAVE_INTERVAL_S = 10
TLS_PORT = 8883
# A PUBLISH of the largest record the collector accepts: the record plus at most 63 bytes of MQTT 3.1.1
# (fixed header 5, topic length 2, the longest device topic 54, packet id 2); the rest of the KiB leaves
# room for MQTT 5 properties. mosquitto measures the packet, not its payload, against max_packet_size.
MAX_PACKET_BYTES = MAX_MESSAGE_BYTES + 1024


@dataclass(frozen=True)
class BrokerPaths:
    """Where the broker finds its files (paths as the broker sees them: host or container)."""

    config_dir: str
    data_dir: str
    log_file: str | None = None
    pid_file: str | None = None


def collector_user(name: str | None) -> str:
    """The MQTT user of a collector identity: the site's first (None) or one added by
    `ctxscope collector enroll --collector NAME`."""
    if name is None:
        return COLLECTOR_USER
    if not COLLECTOR_NAME.fullmatch(name) or name == _COMMAND_NAME:
        raise ValueError(f"collector name {name!r} is invalid: use 1-32 of a-z, 0-9 and '-' (not 'cmd')")
    return f"{COLLECTOR_USER}_{name}"


def is_collector_user(user: str) -> bool:
    """True for a collector identity's ingest user (not its `_cmd` publisher, nor another service user)."""
    if user == COLLECTOR_USER:
        return True
    name = user.removeprefix(COLLECTOR_USER + "_")
    return name != user and COLLECTOR_NAME.fullmatch(name) is not None and name != _COMMAND_NAME


def render_acl(collector_users: Sequence[str] = (COLLECTOR_USER,), operator_user: str = OPERATOR_USER) -> str:
    """The ACL: pattern rules give every device (user name = device id) its own topics only; each
    collector identity and its command publisher read every device's data and send commands.

    mosquitto's acl_file grants or denies what a client receives, not what it subscribes to: a
    collector's `$share/GROUP/ctxscope/v1/...` subscription is delivered under `topic read` of the
    plain topic, and the share group's name (a site secret, see Site.share_group) is what keeps
    devices out of the group."""
    lines = [
        "# ctxscope broker ACL (see docs/security.md). Anything not granted here is denied.",
        "",
        "# Collectors: ingest reads every device's data (shared subscriptions included); each and its",
        "# command publisher send commands.",
    ]
    for collector in collector_users:
        for user in (collector, collector + COMMAND_USER_SUFFIX):
            lines += [f"user {user}", f"topic read {PREFIX}/#", f"topic write {PREFIX}/+/cmd/+"]
            if user == collector:  # ingest announces the collector's presence, under its own name only
                lines.append(f"topic write {presence_topic(collector)}")
            lines.append("")
    lines += [
        "# The operator (command line): sends commands and reads their acks and the devices' state.",
        f"user {operator_user}",
        f"topic write {PREFIX}/+/cmd/+",
        *(f"topic read {PREFIX}/+/{c.value}" for c in (Channel.RUN, Channel.STATUS, Channel.META)),
        "",
        "# Every device: writes only its own data channels, reads only its own commands.",
        *(f"pattern write {PREFIX}/%u/{c.value}" for c in Channel if c is not Channel.CMD),
        f"pattern read {PREFIX}/%u/{Channel.CMD.value}/+",
        "",
        "# Everyone reads the collectors' presence (agents hold their records while none is online).",
        f"pattern read {PRESENCE_FILTER}",
    ]
    return "\n".join(lines) + "\n"


def render_mosquitto_conf(paths: BrokerPaths, port: int = TLS_PORT, bind: str = "0.0.0.0") -> str:
    """mosquitto.conf for a TLS listener with password file and ACL (mosquitto 2.x)."""
    config = paths.config_dir.rstrip("/")
    lines = [
        "# ctxscope broker (mosquitto 2.x); see docs/security.md for what each setting is for.",
        "per_listener_settings false",
        f"listener {port} {bind}",
        f"cafile {config}/ca.crt",
        f"certfile {config}/server.crt",
        f"keyfile {config}/server.key",
        "tls_version tlsv1.2",
        "allow_anonymous false",
        f"password_file {config}/passwd",
        f"acl_file {config}/acl",
        "use_username_as_clientid true",
        "persistence true",
        f"persistence_location {paths.data_dir.rstrip('/')}/",
        f"autosave_interval {AUTOSAVE_INTERVAL_S}",
        "max_queued_messages 0",
        "max_inflight_messages 20",
        f"max_packet_size {MAX_PACKET_BYTES}",
    ]
    if paths.pid_file:
        lines.append(f"pid_file {paths.pid_file}")
    lines.append(f"log_dest file {paths.log_file}" if paths.log_file else "log_dest stderr")
    return "\n".join(lines) + "\n"


def render_logrotate(log_file: str, max_mb: int = 20, keep: int = 5) -> str:
    """A logrotate stanza for a host broker's log file. The broker logs every connection, refused ones
    too, so anyone who can reach its port could otherwise grow the file until the disk is full;
    `copytruncate` because mosquitto keeps the file open (in append mode: it writes on at the start)."""
    return (
        "# ctxscope broker log (host install): install as /etc/logrotate.d/ctxscope-broker\n"
        f"{log_file} {{\n    size {max_mb}M\n    rotate {keep}\n    compress\n    missingok\n"
        "    notifempty\n    copytruncate\n}\n"
    )


COMPOSE_PATHS = BrokerPaths(config_dir="/mosquitto/config", data_dir="/mosquitto/data")
