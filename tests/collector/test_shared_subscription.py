"""Several collectors on one MQTT shared subscription into one PostgreSQL store: the records are split
between them and stored exactly once; each collector still gets every device's retained state."""

from __future__ import annotations

from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest

from ctxscope.broker import MosquittoBroker
from ctxscope.collector.ingest import Ingest
from ctxscope.collector.store import open_store
from ctxscope.shared.codec import encode
from ctxscope.shared.messages import Status
from ctxscope.shared.topics import Channel, topic_for
from tests.support import point_result, wait_for

DEVICES = [f"orin-{i:02d}" for i in range(10)]
STREAMS = {device: f"{i:016x}" for i, device in enumerate(DEVICES)}
PER_DEVICE = 60


@pytest.fixture
def publisher(mosquitto: MosquittoBroker) -> Iterator[mqtt.Client]:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="share_publisher")
    client.max_inflight_messages_set(100)
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    yield client
    client.disconnect()
    client.loop_stop()


def test_two_collectors_split_the_records_and_store_each_once(
    mosquitto: MosquittoBroker, publisher: mqtt.Client, pg_url: str
) -> None:
    stores = [open_store(pg_url), open_store(pg_url)]
    collectors = [
        Ingest(store, mosquitto.host, mosquitto.port, client_id=f"share_{name}", share_group="fleet")
        for store, name in zip(stores, "ab", strict=True)
    ]
    try:
        for collector in collectors:
            collector.start()
            assert collector.wait_connected(10)
        for device in DEVICES:
            status = Status(device=device, stream=STREAMS[device], seq=0, ts=1, state="online", birth=1)
            publisher.publish(topic_for(device, Channel.STATUS), encode(status), qos=1, retain=True)
        for seq in range(1, PER_DEVICE + 1):
            for device in DEVICES:
                record = point_result(device, STREAMS[device], seq)
                publisher.publish(topic_for(device, Channel.RESULT), encode(record), qos=1).wait_for_publish(
                    10
                )
        total = len(DEVICES) * PER_DEVICE
        wait_for(lambda: stores[0].record_count() == total, 30, "every record in the shared store")
        # a collector counts a batch once its commit returns, which the store can show first
        wait_for(lambda: sum(c.counters().stored for c in collectors) >= total, 10, "their counts")
        counters = [c.counters() for c in collectors]
        assert all(c.stored > 0 for c in counters), "the shared subscription did not split the records"
        assert sum(c.stored for c in counters) == total
        assert sum(c.duplicates for c in counters) == 0
        for device in DEVICES:
            assert stores[0].record_seqs(device, STREAMS[device]) == list(range(1, PER_DEVICE + 1))

        # retained state reaches every collector, not one of the group
        def state_seen(c: Ingest) -> bool:
            return c.counters().state_applied + c.counters().state_stale >= len(DEVICES)

        wait_for(lambda: all(map(state_seen, collectors)), 10, "each collector to get every device's status")
        assert {d["state"] for d in stores[1].devices()} == {"online"}
    finally:
        for collector in collectors:
            collector.stop()
        for store in stores:
            store.close()


def test_a_share_group_name_that_could_escape_its_filter_is_refused(tmp_path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        for bad in ("a/b", "#", "+", "", "x" * 101):
            with pytest.raises(ValueError, match="share group"):
                Ingest(store, "127.0.0.1", 1883, client_id="share_c", share_group=bad)
    finally:
        store.close()
