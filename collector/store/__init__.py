"""The collector's store: one interface, SQLite (default) and PostgreSQL backends, chosen by URL."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs

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
    (nor SQLite's checkpoint thread); a write raises StoreReadOnlyError. A SQLite URL may end in
    `?merge_interval_s=SECONDS`: how long new records stay staged before they are merged (results into
    the device-keyed tables, telemetry into its per-device index; longer: fewer bytes written per
    record, slower reads of one device's records)."""
    if url.startswith("sqlite:///"):
        from ctxscope.collector.store.sqlite import MERGE_INTERVAL_S, SQLiteStore

        path, _, query = url.removeprefix("sqlite:///").partition("?")
        merge_interval_s = _sqlite_merge_interval(url, query, MERGE_INTERVAL_S)
        return SQLiteStore(Path(path), read_only=read_only, merge_interval_s=merge_interval_s)
    if url.startswith(("postgresql://", "postgres://")):
        from ctxscope.collector.store.postgres import PostgresStore

        return PostgresStore(url, read_only=read_only)
    raise StoreURLError(f"unsupported store URL {url!r}: use sqlite:///PATH or postgresql://USER@HOST/DB")


MERGE_INTERVAL_LIMITS_S = (1.0, 3600.0)


def _sqlite_merge_interval(url: str, query: str, default: float) -> float:
    """The `merge_interval_s` of a SQLite URL's query (the only option it takes), else `default`."""
    if not query:
        return default
    try:
        options = parse_qs(query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        options = {}
    if list(options) != ["merge_interval_s"] or len(options["merge_interval_s"]) != 1:
        raise StoreURLError(f"store URL {url!r}: a SQLite URL takes only ?merge_interval_s=SECONDS")
    low, high = MERGE_INTERVAL_LIMITS_S
    try:
        seconds = float(options["merge_interval_s"][0])
    except ValueError:
        seconds = float("nan")
    if not low <= seconds <= high:
        raise StoreURLError(f"store URL {url!r}: merge_interval_s must be {low:g} to {high:g} seconds")
    return seconds
