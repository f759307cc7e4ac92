"""The agent reads the collectors' retained presence: it holds its records in its spool while every
collector it knows of is offline, sends them once one is online, and ignores presence messages that
are not a collector's, each with a reason. Presence is published here as a collector publishes it
(the wire contract); the collector's own side is in tests/e2e/test_collector_presence.py."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from pathlib import Path

import msgpack
import paho.mqtt.client as mqtt
import pytest

from ctxscope.agent.config import AgentConfig
from ctxscope.agent.transport.link import MAX_PRESENCE_BYTES, Link
from ctxscope.agent.transport.spool import Spool
from ctxscope.broker import MosquittoBroker
from ctxscope.shared.codec import encode
from ctxscope.shared.messages import CollectorPresence, Log
from ctxscope.shared.topics import Channel, presence_topic, topic_for
from tests.support import wait_for

pytestmark = pytest.mark.slow
DEV = "presence-dev"


@pytest.fixture
def link(mosquitto: MosquittoBroker, tmp_path: Path) -> Iterator[Link]:
    config = AgentConfig(device=DEV, broker_port=mosquitto.port, spool_path=tmp_path / "spool.sqlite")
    link = Link(config, Spool(config.resolved_spool_path(), DEV))
    link.start()
    assert link.wait_connected(10)
    yield link
    link.close(2)


def announce(client: mqtt.Client, collector: str, online: bool, on: str | None = None) -> None:
    presence = CollectorPresence(collector=collector, online=online, ts=time.time_ns())
    client.publish(presence_topic(on or collector), encode(presence), qos=1, retain=True).wait_for_publish(5)


def emit_logs(spool: Spool, n: int) -> None:
    for i in range(n):
        spool.emit(Log, level="info", message=f"line {i}")


def test_records_wait_in_the_spool_while_every_collector_is_offline(
    mosquitto: MosquittoBroker, publisher: mqtt.Client, link: Link
) -> None:
    received: queue.Queue[bytes] = queue.Queue()
    watcher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    watcher.on_message = lambda _c, _u, m: received.put(m.payload)
    watcher.connect(mosquitto.host, mosquitto.port)
    watcher.subscribe(topic_for(DEV, Channel.LOG), qos=1)
    watcher.loop_start()
    try:
        announce(publisher, "collector_a", online=True)
        announce(publisher, "collector_b", online=False)
        time.sleep(0.5)
        assert not link.holding  # one of the two is online
        announce(publisher, "collector_a", online=False)
        wait_for(lambda: link.holding, 5, "the link to hold")
        emit_logs(link.spool, 20)
        time.sleep(1.0)
        assert link.spool.backlog() == 20 and received.empty()  # nothing handed to the broker
        announce(publisher, "collector_b", online=True)
        wait_for(lambda: link.spool.backlog() == 0, 10, "the held records to go")
        assert not link.holding
        wait_for(lambda: received.qsize() == 20, 5, "the held records at the broker")
    finally:
        watcher.loop_stop()
        watcher.disconnect()


def test_a_link_that_knows_no_collector_forwards_and_a_cleared_presence_is_forgotten(
    publisher: mqtt.Client, link: Link
) -> None:
    emit_logs(link.spool, 5)
    assert link.flush(10) and not link.holding  # a broker whose ACL predates presence: as before
    announce(publisher, "collector_a", online=False)
    wait_for(lambda: link.holding, 5, "the link to hold")
    publisher.publish(presence_topic("collector_a"), b"", qos=1, retain=True).wait_for_publish(5)
    wait_for(lambda: not link.holding, 5, "the cleared presence to be forgotten")


def test_presence_that_is_not_a_collectors_is_ignored_with_a_reason(
    publisher: mqtt.Client, link: Link
) -> None:
    offline = {"v": 1, "kind": "collector_presence", "online": False, "ts": 1}
    cases = {
        "presence_too_large": b"\x00" * (MAX_PRESENCE_BYTES + 1),
        "presence_not_msgpack": b"\xc1\xc1",
        "presence_too_deep": b"\x81\xa1v" + b"\x91" * 100 + b"\x90",
        "presence_unsupported_version": msgpack.packb({**offline, "collector": "c3", "v": 2}),
        "presence_invalid": msgpack.packb({**offline, "collector": "c4", "online": 0}),  # 0 is no boolean
        "presence_misaddressed": msgpack.packb({**offline, "collector": "someone_else"}),
    }
    # retained, each on a topic of its own: the link gets each once, whether it subscribed before or after
    for i, payload in enumerate(cases.values()):
        publisher.publish(presence_topic(f"c{i}"), payload, qos=1, retain=True).wait_for_publish(5)
    wait_for(lambda: sum(link.rejected().values()) == len(cases), 5, "every presence message")
    assert link.rejected() == dict.fromkeys(cases, 1)
    assert not link.holding and link.connected
    announce(publisher, "c5", online=False)  # well formed, on its own topic: taken
    wait_for(lambda: link.holding, 5, "the link to hold")


def test_closing_while_holding_keeps_the_records_without_waiting_for_them(
    mosquitto: MosquittoBroker, publisher: mqtt.Client, tmp_path: Path
) -> None:
    config = AgentConfig(device=DEV, broker_port=mosquitto.port, spool_path=tmp_path / "spool.sqlite")
    spool = Spool(config.resolved_spool_path(), DEV)
    link = Link(config, spool)
    link.start()
    assert link.wait_connected(10)
    announce(publisher, "collector_a", online=False)
    wait_for(lambda: link.holding, 5, "the link to hold")
    emit_logs(spool, 3)
    started = time.monotonic()
    assert link.close(flush_timeout_s=15) is False
    assert time.monotonic() - started < 5  # the offline status only, not 15 s for a flush that cannot happen
    assert spool.backlog() == 3
