"""PostgreSQL: a group commit of many devices keeps their rows' new versions on their own pages."""

from __future__ import annotations

import numpy as np
import psycopg

from ctxscope.collector.store import Accepted, open_store
from ctxscope.collector.store.postgres import PostgresStore
from ctxscope.shared.messages import CHANNEL_OF_KIND, TelemetryBatch, TelemetryChannel
from ctxscope.shared.topics import topic_for

DEVICES = 400
COMMITS = 8
PAGE = 8192


def _batch(device: str, seq: int) -> Accepted:
    t = (np.arange(10, dtype="<i8") + seq * 10) * 100_000_000
    channel = TelemetryChannel(unit="W", dtype="f4", data=np.full(10, float(seq), dtype="<f4").tobytes())
    message = TelemetryBatch(
        device=device,
        stream="0123456789abcdef",
        seq=seq,
        ts=seq,
        source="nvml",
        mono_to_wall_ns=5_000_000_000,
        t_ns=t.tobytes(),
        channels={"power_w": channel, "temp_c": channel},
    )
    return Accepted(topic_for(device, CHANNEL_OF_KIND[message.kind]), message)


def test_devices_rows_keep_their_versions_beside_them(pg_url: str) -> None:
    """Each commit updates each of its devices' rows twice (last seen, newest values); without room on
    the page (migration 5), 8 commits of 400 devices spread the 400 rows over 191 pages (measured with
    the fillfactor reset), with it they stay on 64."""
    store = open_store(pg_url)
    assert isinstance(store, PostgresStore)
    try:
        for seq in range(1, COMMITS + 1):
            store.write_batch([_batch(f"dev-{d:04d}", seq) for d in range(DEVICES)])
        assert len(store.devices()) == DEVICES
        assert store.record_count() == DEVICES * COMMITS
    finally:
        store.close()
    with psycopg.connect(pg_url) as pg:
        options, size = pg.execute(
            "SELECT reloptions, pg_relation_size(oid) FROM pg_class WHERE oid = 'devices'::regclass"
        ).fetchone()
    assert options == ["fillfactor=25"]
    assert size // PAGE <= 100, f"devices: {size // PAGE} pages for {DEVICES} rows"
