"""A collector away for long must not grow the broker's memory: it announces its presence, and agents
hold their records in their own spools while it is offline, then send them, each stored exactly once.
(Its will, when it dies, is in test_faults.py's collector SIGKILL test.)"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ctxscope.agent.config import AgentConfig
from ctxscope.agent.transport.link import Link
from ctxscope.agent.transport.spool import Spool
from ctxscope.broker import MosquittoBroker
from ctxscope.collector.ingest import Ingest
from ctxscope.collector.store import open_store
from ctxscope.shared.messages import PointResult
from tests.support import result_fields, wait_for

pytestmark = pytest.mark.slow
DEV = "presence-e2e"


def test_records_made_while_the_collector_is_stopped_wait_on_the_device(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'c.db'}")
    config = AgentConfig(device=DEV, broker_port=mosquitto.port, spool_path=tmp_path / "spool.sqlite")
    spool = Spool(config.resolved_spool_path(), DEV)
    link = Link(config, spool)
    first = Ingest(store, mosquitto.host, mosquitto.port, client_id="presence_c")
    first.start()
    try:
        assert first.wait_connected(10)
        link.start()
        assert link.wait_connected(10)
        spool.emit(PointResult, **result_fields(0))
        wait_for(lambda: store.record_count(DEV) == 1, 10, "a record while the collector runs")
        assert not link.holding
        first.stop()  # says offline before it disconnects
        wait_for(lambda: link.holding, 5, "the agent to hold")
        for i in range(1, 31):
            spool.emit(PointResult, **result_fields(i))
        time.sleep(1.0)
        assert spool.backlog() == 30  # on the device, not in the broker's memory
        second = Ingest(store, mosquitto.host, mosquitto.port, client_id="presence_c")
        second.start()
        try:
            wait_for(lambda: store.record_count(DEV) == 31, 15, "the held records")
            wait_for(lambda: spool.backlog() == 0, 5, "the spool to empty")
            assert store.record_seqs(DEV, spool.stream) == list(range(1, 32))
            assert second.counters().duplicates == 0 and not link.holding
        finally:
            second.stop()
    finally:
        link.close(2)
        store.close()
