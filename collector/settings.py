"""The collector's default locations."""

from __future__ import annotations

from ctxscope.paths import state_dir


def default_store_url() -> str:
    """The SQLite store in the user's state folder."""
    return f"sqlite:///{state_dir() / 'collector.sqlite'}"
