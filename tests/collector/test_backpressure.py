"""The bounded inbox and the rate-limited log: memory and log volume stay flat whatever arrives."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from ctxscope.broker import MosquittoBroker
from ctxscope.collector.inbox import Inbox
from ctxscope.collector.ingest import Ingest
from ctxscope.collector.store import BatchOutcome
from ctxscope.collector.store.sqlite import SQLiteStore
from ctxscope.ratelog import RateLimitedLog
from ctxscope.shared.codec import encode
from ctxscope.shared.topics import Channel, topic_for
from tests.support import point_result


def test_inbox_bounds_messages_and_bytes() -> None:
    inbox: Inbox[int] = Inbox(max_messages=3, max_bytes=100)
    assert inbox.put(1, 10, 0) and inbox.put(2, 10, 0) and inbox.put(3, 10, 0)
    assert not inbox.put(4, 10, 0.05)  # full by count
    assert inbox.take(10, 1000, 0) == [1, 2, 3]
    assert inbox.put(5, 90, 0) and not inbox.put(6, 20, 0.05)  # full by bytes
    assert inbox.take(10, 1000, 0) == [5]
    assert inbox.put(7, 10_000, 0)  # an empty inbox takes even an oversized message
    assert inbox.take(10, 1000, 0) == [7] and inbox.take(10, 1000, 0.01) == []
    for i in range(2):
        inbox.put(i, 40, 0)
    assert inbox.take(10, 60, 0) == [0]  # a batch stops at its byte budget
    assert inbox.stats().full_waits == 2


def test_a_blocked_put_resumes_when_the_writer_takes() -> None:
    inbox: Inbox[int] = Inbox(max_messages=1)
    inbox.put(0, 1, 0)
    done = threading.Event()
    threading.Thread(target=lambda: done.set() if inbox.put(1, 1, 5) else None).start()
    time.sleep(0.1)
    assert not done.is_set()
    assert inbox.take(1, 10, 0) == [0]
    assert done.wait(2) and inbox.take(1, 10, 0) == [1]


def test_rate_limited_log_writes_a_burst_then_a_summary(caplog: pytest.LogCaptureFixture) -> None:
    limiter = RateLimitedLog(logging.getLogger("t"), burst=3, interval_s=10)
    with caplog.at_level(logging.WARNING):
        written = [limiter.log(logging.WARNING, "k", "line %d", i, now=0.0) for i in range(100)]
        assert limiter.log(logging.WARNING, "other", "another key", now=1.0)
        assert limiter.log(logging.WARNING, "k", "after the window", now=10.0)
    assert written.count(True) == 3
    assert [r.getMessage() for r in caplog.records] == [
        "line 0", "line 1", "line 2", "another key", "97 more like 'k' in the last 10 s", "after the window",
    ]  # fmt: skip


class SlowStore(SQLiteStore):
    def write_batch(self, items: Any) -> BatchOutcome:
        time.sleep(0.02)
        return super().write_batch(items)


@pytest.mark.slow
def test_a_slow_store_holds_the_broker_back_instead_of_filling_memory(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    store = SlowStore(tmp_path / "c.db")
    ingest = Ingest(store, mosquitto.host, mosquitto.port, client_id="slow_c", inbox=Inbox(max_messages=5))
    ingest.start()
    assert ingest.wait_connected(10)
    publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    publisher.max_inflight_messages_set(100)
    publisher.connect(mosquitto.host, mosquitto.port)
    publisher.loop_start()
    peak = 0
    try:
        for seq in range(1, 301):
            publisher.publish(
                topic_for("dev-1", Channel.RESULT), encode(point_result("dev-1", "0" * 16, seq)), qos=1
            )
        deadline = time.monotonic() + 60
        while ingest.counters().stored < 300 and time.monotonic() < deadline:
            peak = max(peak, ingest.health()["inbox_messages"])
            time.sleep(0.005)
        assert store.record_seqs("dev-1", "0" * 16) == list(range(1, 301))
        assert peak <= 5 and ingest.health()["inbox_full_waits"] > 0  # paho waited: back-pressure
    finally:
        publisher.loop_stop()
        publisher.disconnect()
        ingest.stop()
        store.close()
