"""The shipped broker configuration caps a message's size at the contract's: a record the collector
accepts (8 MiB, on the longest device topic) goes through, a bigger one is refused at the door, so that
no device can fill the broker's memory with huge messages queued for an absent collector."""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

import pytest

from ctxscope.collector.security.broker_config import COLLECTOR_USER, MAX_PACKET_BYTES
from ctxscope.compat import tomllib
from ctxscope.shared.broker_access import BrokerAccess
from ctxscope.shared.codec import MAX_MESSAGE_BYTES
from ctxscope.shared.topics import Channel, subscription, topic_for

from .conftest import HOST, SecureBroker, connect, stop_client

pytestmark = pytest.mark.slow
LONGEST_DEVICE = "d" * 32  # device ids have at most 32 characters; `telemetry` is the longest channel


def enrolled(broker: SecureBroker, device: str, out: Path) -> BrokerAccess:
    """Enroll `device` on the running broker (the site reloads it) and wait until it is let in."""
    bundle = broker.site.enroll(device, out, HOST, broker.port).bundle
    config = tomllib.loads((bundle / "agent.toml").read_text())
    access = BrokerAccess(config["username"], config["password"], True, broker.site.ca_cert)
    deadline = time.monotonic() + 10
    while True:
        client, reason = connect(broker.port, access)
        stop_client(client)
        if reason is not None and not reason.is_failure:
            return access
        assert time.monotonic() < deadline, "the reloaded broker does not admit the new device"
        time.sleep(0.2)


def test_an_8_mib_record_passes_and_a_bigger_message_is_refused(
    secure_broker: SecureBroker, tmp_path: Path
) -> None:
    device_access = enrolled(secure_broker, LONGEST_DEVICE, tmp_path / "bundle")
    collector, _ = connect(secure_broker.port, secure_broker.site.access(COLLECTOR_USER))
    received: queue.Queue[int] = queue.Queue()
    collector.on_message = lambda _c, _u, m: received.put(len(m.payload))
    subscribed = threading.Event()
    collector.on_subscribe = lambda *_args: subscribed.set()
    collector.subscribe(subscription(Channel.TELEMETRY), 1)
    assert subscribed.wait(10)
    device, reason = connect(secure_broker.port, device_access)
    assert reason is not None and not reason.is_failure
    dropped = threading.Event()
    device.on_disconnect = lambda *_args: dropped.set()
    topic = topic_for(LONGEST_DEVICE, Channel.TELEMETRY)
    try:
        device.publish(topic, b"r" * MAX_MESSAGE_BYTES, qos=1).wait_for_publish(60)
        assert received.get(timeout=30) == MAX_MESSAGE_BYTES
        # a payload as large as the limit, so the packet is past it: the broker drops the connection unread
        device.publish(topic, b"x" * MAX_PACKET_BYTES, qos=1)
        assert dropped.wait(30), "the broker took an oversize message"
        time.sleep(1.0)
        assert received.empty(), "the oversize message was delivered"
    finally:
        stop_client(device)
        stop_client(collector)
