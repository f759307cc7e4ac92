"""A store opened read-only (the fleet view's worker) reads what a collector writes, and writes nothing."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from ctxscope.collector.store import Accepted, StoreOpenError, StoreReadOnlyError, open_store
from ctxscope.shared.messages import CHANNEL_OF_KIND
from ctxscope.shared.topics import topic_for
from tests.support import point_result

DEV = "orin-nx-1"
STREAM = "0123456789abcdef"


def test_a_read_only_store_sees_the_writers_commits_and_refuses_writes(store_url: str) -> None:
    writer = open_store(store_url)
    reader = open_store(store_url, read_only=True)
    try:
        result = point_result(DEV, STREAM, 1)
        writer.write_batch([Accepted(topic_for(DEV, CHANNEL_OF_KIND[result.kind]), result)])
        assert [r["seq"] for r in reader.results(DEV)] == [1]
        with pytest.raises(StoreReadOnlyError, match="read-only"):
            reader.write_batch(
                [Accepted(topic_for(DEV, CHANNEL_OF_KIND[result.kind]), point_result(DEV, STREAM, 2))]
            )
        assert writer.record_count(DEV) == 1
    finally:
        reader.close()
        writer.close()


def test_a_read_only_sqlite_store_starts_no_checkpoint_thread(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'collector.db'}"
    open_store(url).close()
    before = {t.name for t in threading.enumerate()}
    reader = open_store(url, read_only=True)
    try:
        assert "ctxscope-sqlite-checkpoint" not in {t.name for t in threading.enumerate()} - before
    finally:
        reader.close()


def test_a_missing_sqlite_store_is_not_created_by_a_read_only_open(tmp_path: Path) -> None:
    db = tmp_path / "absent.db"
    with pytest.raises(StoreOpenError, match="read-only: no such file"):
        open_store(f"sqlite:///{db}", read_only=True)
    assert not db.exists()


def test_a_store_of_an_older_schema_is_refused_read_only_with_what_to_do(store_url: str) -> None:
    """A read-only open migrates nothing, and the readers query the latest schema's views."""
    from ctxscope.collector.store.migrations import LATEST

    writer = open_store(store_url)
    try:
        with writer._transaction() as cur:  # as a store the previous release left
            cur.execute(writer._sql("DELETE FROM schema_migrations WHERE version = ?"), (LATEST,))
        with pytest.raises(StoreOpenError, match=f"schema version {LATEST - 1} .* start the collector on it"):
            open_store(store_url, read_only=True)
    finally:
        writer.close()
