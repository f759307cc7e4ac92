"""The mosquitto configuration and ACL that ctxscope ships: one renderer for compose, host and tests.

What each setting is for:
- `allow_anonymous false`, `password_file`, `acl_file`: every client has an identity and the ACL
  confines a device to `ctxscope/v1/<its id>/...` and to reading its own `cmd/` topics.
- `use_username_as_clientid true`: a client's id is its user name, so nobody can take over another
  identity's session (the collector's persistent session included) without that identity's password.
- TLS listener: credentials and commands never cross the network in clear.
- `persistence` with a short `autosave_interval`: queued QoS 1 records survive a broker restart.
- `max_queued_messages 0`: the broker never drops the queue of a collector that is away (a stock
  mosquitto keeps 1,000 per session and silently drops the rest); memory is the bound, see
  docs/security.md for sizing.
"""

from __future__ import annotations

from dataclasses import dataclass

from ctxscope.shared.topics import PREFIX, Channel

COLLECTOR_USER = "ctxscope_collector"
OPERATOR_USER = "ctxscope_operator"
AUTOSAVE_INTERVAL_S = 10
TLS_PORT = 8883


@dataclass(frozen=True)
class BrokerPaths:
    """Where the broker finds its files (paths as the broker sees them: host or container)."""

    config_dir: str
    data_dir: str
    log_file: str | None = None
    pid_file: str | None = None


def render_acl(collector_user: str = COLLECTOR_USER, operator_user: str = OPERATOR_USER) -> str:
    """The ACL: pattern rules give every device (user name = device id) its own topics only."""
    command_user = collector_user + "_cmd"
    lines = [
        "# ctxscope broker ACL (see docs/security.md). Anything not granted here is denied.",
        "",
        "# The collector: ingest reads every device's data; it and its command publisher send commands.",
    ]
    for user in (collector_user, command_user):
        lines += [f"user {user}", f"topic read {PREFIX}/#", f"topic write {PREFIX}/+/cmd/+", ""]
    lines += [
        "# The operator (command line): sends commands and reads their acks and the devices' state.",
        f"user {operator_user}",
        f"topic write {PREFIX}/+/cmd/+",
        *(f"topic read {PREFIX}/+/{c.value}" for c in (Channel.RUN, Channel.STATUS, Channel.META)),
        "",
        "# Every device: writes only its own data channels, reads only its own commands.",
        *(f"pattern write {PREFIX}/%u/{c.value}" for c in Channel if c is not Channel.CMD),
        f"pattern read {PREFIX}/%u/{Channel.CMD.value}/+",
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
    ]
    if paths.pid_file:
        lines.append(f"pid_file {paths.pid_file}")
    lines.append(f"log_dest file {paths.log_file}" if paths.log_file else "log_dest stderr")
    return "\n".join(lines) + "\n"


COMPOSE_PATHS = BrokerPaths(config_dir="/mosquitto/config", data_dir="/mosquitto/data")
