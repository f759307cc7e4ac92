"""Broker helpers: probe, private mosquitto with persistent sessions, embedded amqtt, ensure_broker."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from ctxscope.agent.config import AgentConfig
from ctxscope.agent.transport.link import Link
from ctxscope.agent.transport.spool import Spool
from ctxscope.broker import (
    AmqttBroker,
    BrokerError,
    MosquittoBroker,
    broker_answers,
    ensure_broker,
    free_port,
)
from ctxscope.collector.ingest import Ingest
from ctxscope.collector.store import open_store
from ctxscope.shared.messages import PointResult
from tests.support import result_fields, wait_for

pytestmark = pytest.mark.slow


def test_probe_tells_a_broker_from_a_closed_port(mosquitto: MosquittoBroker) -> None:
    assert broker_answers(mosquitto.host, mosquitto.port)
    assert not broker_answers("127.0.0.1", free_port(), timeout_s=0.5)


def test_ensure_broker_uses_a_running_one_else_starts_mosquitto(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    found = ensure_broker(mosquitto.host, mosquitto.port)
    assert (found.kind, found.port) == ("external", mosquitto.port)
    port = free_port()
    started = ensure_broker("127.0.0.1", port, workdir=tmp_path / "own")
    try:
        assert (started.kind, started.port) == ("mosquitto", port)
        assert "private mosquitto" in started.describe()
        assert broker_answers("127.0.0.1", port)
    finally:
        started.stop()
    assert not broker_answers("127.0.0.1", port, timeout_s=0.5)


def test_private_mosquitto_listens_on_loopback_only(mosquitto: MosquittoBroker) -> None:
    assert listening_addresses(mosquitto.port) == {"127.0.0.1"}


def test_records_flow_through_the_embedded_amqtt_broker(tmp_path: Path) -> None:
    broker = AmqttBroker()
    broker.start()
    store = open_store(f"sqlite:///{tmp_path / 'c.db'}")
    ingest = Ingest(store, broker.host, broker.port, client_id="amqtt_collector")
    config = AgentConfig(device="amqtt-dev", broker_port=broker.port, spool_path=tmp_path / "spool.sqlite")
    spool = Spool(config.resolved_spool_path(), "amqtt-dev")
    link = Link(config, spool)
    try:
        ingest.start()
        assert ingest.wait_connected(10)
        link.start()
        assert link.wait_connected(10)
        for i in range(50):
            spool.emit(PointResult, **result_fields(i))
        assert link.flush(20)
        wait_for(lambda: store.record_count("amqtt-dev") == 50, 10, "50 records in the store")
        assert store.record_seqs("amqtt-dev", spool.stream) == list(range(1, 51))
    finally:
        link.close(5)
        ingest.stop()
        store.close()
        broker.stop()
    assert not broker.running


def listening_addresses(port: int) -> set[str]:
    return {
        c.laddr.ip for c in psutil.net_connections("tcp") if c.status == "LISTEN" and c.laddr.port == port
    }


def test_amqtt_listens_on_loopback_only() -> None:
    broker = AmqttBroker()
    broker.start()
    try:
        assert listening_addresses(broker.port) == {"127.0.0.1"}
    finally:
        broker.stop()


def test_ensure_broker_falls_back_to_amqtt_without_mosquitto(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ctxscope.broker.mosquitto_binary", lambda: None)
    port = free_port()
    handle = ensure_broker("127.0.0.1", port)
    try:
        assert handle.kind == "amqtt" and "embedded amqtt" in handle.describe()
        assert broker_answers("127.0.0.1", port)
    finally:
        handle.stop()


def test_a_mosquitto_that_never_answers_is_not_left_running(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    silent = tmp_path / "silent-mosquitto"
    silent.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 60\n")
    silent.chmod(0o755)
    broker = MosquittoBroker(tmp_path / "broker", binary=str(silent))
    with pytest.raises(BrokerError, match="did not answer"):
        broker.start(timeout_s=1.0)
    assert not broker.running
    assert not psutil.pid_exists(int(pid_file.read_text()))
