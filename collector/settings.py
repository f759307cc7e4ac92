"""The collector's addresses and default locations, parsed and named in one place."""

from __future__ import annotations

from ctxscope.paths import state_dir


def parse_broker(address: str) -> tuple[str, int]:
    """HOST:PORT (of a broker, or of the dashboard) -> (host, port); ValueError naming the input."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"broker address {address!r} is not HOST:PORT")
    return host, int(port)


def default_store_url() -> str:
    """The SQLite store in the user's state folder."""
    return f"sqlite:///{state_dir() / 'collector.sqlite'}"
