"""The collector's store: one interface, SQLite (default) and PostgreSQL backends, chosen by URL."""

from __future__ import annotations

from pathlib import Path

from ctxscope.collector.store.base import (
    Accepted,
    BatchOutcome,
    Gap,
    Rejected,
    Store,
    StoreOpenError,
    TelemetrySeries,
)

__all__ = [
    "Accepted",
    "BatchOutcome",
    "Gap",
    "Rejected",
    "Store",
    "StoreOpenError",
    "StoreURLError",
    "TelemetrySeries",
    "open_store",
]


class StoreURLError(ValueError):
    """A store URL that names no supported backend."""


def open_store(url: str) -> Store:
    """Open (and migrate) the store at `sqlite:///path/to.db` or `postgresql://user@host/db`."""
    if url.startswith("sqlite:///"):
        from ctxscope.collector.store.sqlite import SQLiteStore

        return SQLiteStore(Path(url.removeprefix("sqlite:///")))
    if url.startswith(("postgresql://", "postgres://")):
        from ctxscope.collector.store.postgres import PostgresStore

        return PostgresStore(url)
    raise StoreURLError(f"unsupported store URL {url!r}: use sqlite:///PATH or postgresql://USER@HOST/DB")
