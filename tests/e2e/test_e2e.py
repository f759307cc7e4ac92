"""End to end through a real mosquitto: agent spool -> link -> broker -> ingest -> SQLite store.

Every test counts records exactly: each seq of the agent's stream stored once, no gaps, across a
broker restart, an agent SIGKILL and a collector SIGKILL.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ctxscope.agent.config import AgentConfig
from ctxscope.agent.transport.link import Link
from ctxscope.agent.transport.spool import Spool
from ctxscope.broker import MosquittoBroker
from ctxscope.collector.ingest import Ingest
from ctxscope.collector.store import open_store
from ctxscope.collector.store.base import Store
from ctxscope.shared.messages import PointResult
from tests.support import result_fields, wait_for

pytestmark = pytest.mark.slow
HERE = Path(__file__).parent


@pytest.fixture
def collector(mosquitto: MosquittoBroker, tmp_path: Path) -> Iterator[Ingest]:
    store = open_store(f"sqlite:///{tmp_path / 'collector.db'}")
    ingest = Ingest(store, mosquitto.host, mosquitto.port, client_id="e2e_collector")
    ingest.start()
    assert ingest.wait_connected(10)
    yield ingest
    ingest.stop()
    store.close()


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[str]]]:
    """Child processes a test starts; any still running at the end (a failed test) are killed."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for child in started:
        if child.poll() is None:
            child.kill()
            child.wait()


def assert_exactly(store: Store, device: str, stream: str, n: int) -> None:
    assert store.record_seqs(device, stream) == list(range(1, n + 1))
    assert store.gaps(device) == []


def test_broker_restart_mid_stream_loses_and_duplicates_nothing(
    mosquitto: MosquittoBroker, collector: Ingest, tmp_path: Path
) -> None:
    device, total = "agent-restart", 600
    config = AgentConfig(
        device=device, broker_port=mosquitto.port, spool_path=tmp_path / "spool.sqlite", keepalive_s=5
    )
    spool = Spool(config.resolved_spool_path(), device)
    link = Link(config, spool)
    link.start()
    assert link.wait_connected(10)

    def produce() -> None:
        for i in range(total):
            spool.emit(PointResult, **result_fields(i))
            time.sleep(0.004)

    producer = threading.Thread(target=produce)
    producer.start()
    wait_for(lambda: collector.store.record_count(device) > 100, 15, "records before the restart")
    mosquitto.stop()
    stored_before = collector.store.record_count(device)
    time.sleep(0.5)
    mosquitto.start()
    producer.join()
    assert link.flush(20), f"spool still holds {spool.backlog()} records"
    wait_for(lambda: collector.store.record_count(device) == total, 15, f"{total} records in the store")
    assert 0 < stored_before < total, "the restart did not happen mid-stream"
    assert link.close(5)
    assert_exactly(collector.store, device, spool.stream, total)
    assert sum(collector.counters().rejected.values()) == 0
    (row,) = [d for d in collector.store.devices() if d["device"] == device]
    wait_for(lambda: collector.store.devices()[0]["state"] == "offline", 5, "the clean offline status")
    assert row["birth"] >= 2  # one birth per connection: the reconnect counted


def test_agent_sigkill_mid_stream_then_restart_delivers_the_rest(
    mosquitto: MosquittoBroker, collector: Ingest, tmp_path: Path, children: list[subprocess.Popen[str]]
) -> None:
    device, total = "agent-killed", 400
    spool_path = tmp_path / "agent-spool.sqlite"
    command = [sys.executable, str(HERE / "agent_child.py"), "--port", str(mosquitto.port), "--spool",
               str(spool_path), "--device", device, "--total", str(total), "--rate-hz", "150"]  # fmt: skip
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    children.append(child)
    assert child.stdout is not None
    for line in child.stdout:
        if line.strip().isdigit() and int(line) >= total // 3:
            break
    child.send_signal(signal.SIGKILL)
    child.wait()
    killed_at = Spool(spool_path, device).high_water_seq()
    assert killed_at < total
    wait_for(lambda: collector.store.devices() and collector.store.devices()[0]["state"] == "offline", 10,
             "the last will after SIGKILL")  # fmt: skip

    restarted = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert restarted.returncode == 0, restarted.stderr[-2000:]
    assert restarted.stdout.splitlines()[-1] == "flushed"
    assert int(restarted.stdout.split()[0]) == killed_at + 1  # seq continued across the kill
    wait_for(lambda: collector.store.record_count(device) == total, 15, f"{total} records in the store")
    reopened = Spool(spool_path, device)
    assert reopened.backlog() == 0
    assert_exactly(collector.store, device, reopened.stream, total)
    # a clean close publishes offline once the spool is flushed: it may arrive after the last record
    wait_for(lambda: collector.store.devices()[0]["state"] == "offline", 10, "the clean offline status")


def test_collector_sigkill_gets_unacked_messages_redelivered(
    mosquitto: MosquittoBroker, tmp_path: Path, children: list[subprocess.Popen[str]]
) -> None:
    """The first collector receives a burst it cannot commit (its database is locked), is killed
    holding those un-acked messages, and a restarted collector gets them from the session."""
    device, per_phase = "agent-steady", 100
    db = tmp_path / "collector.db"
    broker = f"{mosquitto.host}:{mosquitto.port}"
    cli = [sys.executable, "-c", "from ctxscope.cli import main; main()"]
    collector_cmd = [
        *cli,
        "collector",
        "run",
        "--broker",
        broker,
        "--store",
        f"sqlite:///{db}",
        "--client-id",
        "crashy_c",
        "--no-web",
    ]
    first = subprocess.Popen(collector_cmd, stderr=subprocess.DEVNULL, text=True)
    children.append(first)
    config = AgentConfig(device=device, broker_port=mosquitto.port, spool_path=tmp_path / "spool.sqlite")
    spool = Spool(config.resolved_spool_path(), device)
    link = Link(config, spool)
    link.start()

    def emit(n: int) -> None:
        for i in range(n):
            spool.emit(PointResult, **result_fields(i))
        assert link.flush(20)

    wait_for(lambda: db.exists(), 10, "the collector's database")
    store = open_store(f"sqlite:///{db}")
    wait_for(lambda: bool(store.devices()), 10, "the collector to subscribe and see the agent's birth")
    emit(per_phase)
    wait_for(lambda: store.record_count(device) == per_phase, 10, "the first phase in the store")
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # the collector now receives but cannot commit, so never acks
    emit(per_phase)
    time.sleep(0.5)
    first.send_signal(signal.SIGKILL)
    first.wait()
    blocker.execute("ROLLBACK")
    blocker.close()
    assert store.record_count(device) == per_phase

    second = subprocess.Popen(collector_cmd, stderr=subprocess.PIPE, text=True)
    children.append(second)
    try:
        emit(per_phase)
        wait_for(lambda: store.record_count(device) == 3 * per_phase, 20, "every record in the store")
    finally:
        second.send_signal(signal.SIGTERM)
        _, err = second.communicate(timeout=15)
    assert second.returncode == 0, err[-2000:]
    assert "collector stopped" in err
    assert_exactly(store, device, spool.stream, 3 * per_phase)
    link.close(5)
    store.close()
