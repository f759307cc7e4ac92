"""The collector's default locations, and opening a store to read what was collected."""

from __future__ import annotations

from ctxscope.collector.store import Store, StoreOpenError, open_store
from ctxscope.paths import demo_dir, state_dir


def default_store_url() -> str:
    """The SQLite store in the user's state folder."""
    return f"sqlite:///{state_dir() / 'collector.sqlite'}"


def demo_store_url() -> str:
    """The store `ctxscope demo` keeps in its default work folder."""
    return f"sqlite:///{demo_dir() / 'collector.sqlite'}"


def open_for_reading(store_url: str | None) -> Store:
    """An existing store, read-only (the default one without `store_url`): a command that only reads
    never creates an empty store where a mistyped path or the wrong default points (StoreOpenError)."""
    url = store_url or default_store_url()
    try:
        return open_store(url, read_only=True)
    except StoreOpenError as exc:
        if store_url is None:
            raise StoreOpenError(
                f"{exc} (the default store: nothing was collected there yet; the demo's store is "
                f"--store {demo_store_url()})"
            ) from exc
        raise
