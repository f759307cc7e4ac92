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
    StoreReadOnlyError,
    TelemetrySeries,
)

__all__ = [
    "Accepted",
    "BatchOutcome",
    "Gap",
    "Rejected",
    "Store",
    "StoreOpenError",
    "StoreReadOnlyError",
    "StoreURLError",
    "TelemetrySeries",
    "open_store",
]


class StoreURLError(ValueError):
    """A store URL that names no supported backend."""


def open_store(url: str, *, read_only: bool = False) -> Store:
    """Open (and migrate) the store at `sqlite:///path/to.db` or `postgresql://user@host/db`.
    `read_only` opens an existing store for reading only: no schema or migration, no writer connection
    (nor SQLite's checkpoint thread); a write raises StoreReadOnlyError."""
    if url.startswith("sqlite:///"):
        from ctxscope.collector.store.sqlite import SQLiteStore

        return SQLiteStore(Path(url.removeprefix("sqlite:///")), read_only=read_only)
    if url.startswith(("postgresql://", "postgres://")):
        from ctxscope.collector.store.postgres import PostgresStore

        return PostgresStore(url, read_only=read_only)
    raise StoreURLError(f"unsupported store URL {url!r}: use sqlite:///PATH or postgresql://USER@HOST/DB")
