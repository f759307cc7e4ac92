"""Fixtures shared by every test folder."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ctxscope.collector.store import BatchOutcome
from ctxscope.collector.store.sqlite import SQLiteStore
from tests.support import mosquitto, publisher, store, store_url

__all__ = ["mosquitto", "publisher", "store", "store_url"]  # fixtures for every folder (see tests/support.py)

PG_BASE_URL = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL schema for one test, dropped afterwards; skipped if the server is down."""
    psycopg = pytest.importorskip("psycopg", reason="the postgres extra (psycopg) is not installed")
    try:
        admin = psycopg.connect(PG_BASE_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL at {PG_BASE_URL} is unreachable: {exc}")
    schema = f"ctxscope_test_{secrets.token_hex(4)}"
    admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG_BASE_URL}?options=-csearch_path%3D{schema}"
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


class FailingStore(SQLiteStore):
    """A real SQLite store whose writes raise `error` (not a sqlite3 error) until `healed` is set."""

    def __init__(self, path: Path, error: Exception) -> None:
        super().__init__(path)
        self.error = error
        self.healed = threading.Event()

    def write_batch(self, items: Any) -> BatchOutcome:
        if not self.healed.is_set():
            raise self.error
        return super().write_batch(items)


@pytest.fixture
def failing_store() -> Callable[[Path, Exception], FailingStore]:
    """Builds a FailingStore: `failing_store(path, error)`."""
    return FailingStore
