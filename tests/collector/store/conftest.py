"""The store's tests run on both backends (the collector folder's `store` is SQLite only)."""

from tests.support import store, store_url

__all__ = ["store", "store_url"]
