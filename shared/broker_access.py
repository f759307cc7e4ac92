"""How a client reaches the broker: credentials and TLS, and the rule that makes them mandatory.

Every ctxscope client (agent link, collector ingest, command publisher) connects through
`BrokerAccess.apply()`. `require_secure()` is the policy: a broker address that is not loopback
needs a username, a password and TLS, unless the user said `insecure` explicitly. A host name is
never resolved to decide this: only literal loopback addresses and `localhost` count as local.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from pathlib import Path

import paho.mqtt.client as mqtt

# The collector's command publisher connects as this suffix of the collector's user name: brokers
# set up by `ctxscope collector enroll` use the user name as client id, so one user holds one
# connection, and the ingest session must not be displaced by the publisher.
COMMAND_USER_SUFFIX = "_cmd"


class InsecureBroker(ValueError):
    """A non-loopback broker address without credentials or TLS, and no explicit `insecure`."""


def split_host_port(address: str) -> tuple[str, int]:
    """HOST:PORT -> (host, port). An IPv6 address is written in brackets, as in a URL ([::1]:1883), and
    the brackets are no part of its name (kept, the name would resolve nowhere). ValueError naming the
    input for anything else."""
    host, sep, port = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or "[" in host or "]" in host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(
            f"{address!r} is not HOST:PORT, or [ADDRESS]:PORT for IPv6, with a port from 1 to 65535"
        )
    return host, int(port)


def is_loopback(host: str) -> bool:
    """True for `localhost`, 127.0.0.0/8 and ::1 (no name resolution)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class BrokerAccess:
    """Credentials and TLS settings of one client. `ca_file` None with `tls` uses the system CAs."""

    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: Path | None = None
    insecure: bool = False

    def apply(self, client: mqtt.Client) -> None:
        """Set the credentials and TLS on a paho client before it connects."""
        if self.username is not None:
            client.username_pw_set(self.username, self.password)
        if self.tls:
            client.tls_set(ca_certs=str(self.ca_file) if self.ca_file else None)

    def for_commands(self) -> BrokerAccess:
        """The access of the collector's command publisher (see COMMAND_USER_SUFFIX)."""
        if self.username is None:
            return self
        return replace(self, username=self.username + COMMAND_USER_SUFFIX)


def require_secure(host: str, access: BrokerAccess, who: str, override: str = "--insecure") -> None:
    """Raise InsecureBroker if `who` would talk to a non-loopback broker without credentials and TLS;
    `override` names how the user says `insecure` where `who` is configured."""
    if access.insecure or is_loopback(host):
        return
    missing = [
        what
        for what, present in (
            ("a username", access.username is not None),
            ("a password", access.password is not None),
            ("TLS", access.tls),
        )
        if not present
    ]
    if missing:
        raise InsecureBroker(
            f"{who} refuses to connect to broker {host!r} without {', '.join(missing)}: a broker outside "
            "loopback needs credentials and TLS (`ctxscope collector enroll` makes them). "
            f"To connect anyway, on a network you trust, use {override}."
        )
