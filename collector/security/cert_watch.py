"""The broker's TLS certificate as the collector sees it, and a warning well before it expires.

Once the broker's certificate has expired, no agent and no collector can connect: a fleet left alone
goes dark on that day. The collector reads the certificate the broker presents at each connection and
judges its end against the clock whenever it looks (a collector left running reconnects rarely):
within WARN_DAYS it logs a warning once a day and says so in `/api/ingest` (the fleet page's banner)
and `/metrics`. `ctxscope collector renew-cert` issues the new one.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt

log = logging.getLogger(__name__)
NS_PER_S = 1_000_000_000
WARN_DAYS = 30
LOG_EVERY_NS = 86_400 * NS_PER_S


def presented_not_after_ns(client: mqtt.Client) -> int | None:
    """When the certificate the broker presented on this connection expires (wall clock, ns); None
    without TLS or without a verified certificate."""
    sock = client.socket()
    if not isinstance(sock, ssl.SSLSocket):
        return None
    try:
        cert = sock.getpeercert()  # the parsed form exists only for a certificate that was verified
        return int(ssl.cert_time_to_seconds(str(cert["notAfter"]))) * NS_PER_S if cert else None
    except (KeyError, ValueError, OSError):  # a socket closing meanwhile, or a date it cannot read
        return None


class CertWatch:
    """The latest expiry seen, and whether it is near; thread-safe (paho's thread sets it)."""

    def __init__(self, broker: str, warn_days: int = WARN_DAYS) -> None:
        self.broker = broker
        self.warn_ns = warn_days * 86_400 * NS_PER_S
        self._lock = threading.Lock()
        self._not_after_ns: int | None = None
        self._logged_ns: int | None = None

    @property
    def not_after_ns(self) -> int | None:
        with self._lock:
            return self._not_after_ns

    def connected(self, client: mqtt.Client) -> None:
        """Read the certificate of a new connection."""
        self.seen(presented_not_after_ns(client))

    def seen(self, not_after: int | None) -> None:
        """The end of the certificate a connection presented (a renewed one resets the daily warning)."""
        with self._lock:
            if not_after != self._not_after_ns:
                self._not_after_ns, self._logged_ns = not_after, None
        self.check()

    def expiring(self, now_ns: int | None = None) -> bool:
        not_after = self.not_after_ns
        now = time.time_ns() if now_ns is None else now_ns
        return not_after is not None and not_after - now <= self.warn_ns

    def check(self, now_ns: int | None = None) -> None:
        """Log a warning if the certificate is near its end, at most once a day."""
        now = time.time_ns() if now_ns is None else now_ns
        if not self.expiring(now):
            return
        with self._lock:
            if self._logged_ns is not None and now - self._logged_ns < LOG_EVERY_NS:
                return
            self._logged_ns = now
            not_after = self._not_after_ns
        assert not_after is not None
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(not_after / NS_PER_S))
        days = (not_after - now) / (86_400 * NS_PER_S)
        state = f"expires {when} (in {days:.0f} days)" if days > 0 else f"EXPIRED {when}"
        log.warning(
            "the TLS certificate of broker %s %s: after that no agent or collector can connect; "
            "renew it on the site's host with `ctxscope collector renew-cert`",
            self.broker,
            state,
        )

    def health(self, now_ns: int | None = None) -> dict[str, Any]:
        return {"broker_cert_expires_ns": self.not_after_ns, "broker_cert_expiring": self.expiring(now_ns)}
