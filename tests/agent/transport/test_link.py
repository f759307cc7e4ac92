"""The agent's MQTT link: retained birth and status, clean offline, commands with expiry."""

from __future__ import annotations

import getpass
import logging
import queue
import sqlite3
import subprocess
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from ctxscope.agent.config import AgentConfig
from ctxscope.agent.transport.link import MAX_COMMAND_BYTES, Link
from ctxscope.agent.transport.spool import Spool
from ctxscope.broker import MosquittoBroker, free_port, mosquitto_binary
from ctxscope.shared.codec import decode, encode
from ctxscope.shared.messages import Command, CommandAck, DeviceMeta, Log, Message, Status
from ctxscope.shared.topics import Channel, command_topic, topic_for

pytestmark = pytest.mark.slow
DEV = "link-dev"


class Observer:
    """A plain MQTT client that records the decoded messages of the device's state topics."""

    def __init__(self, broker: MosquittoBroker) -> None:
        self.messages: queue.Queue[tuple[Message, bool]] = queue.Queue()
        self.unread: list[tuple[Message, bool]] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        self.client.on_message = lambda _c, _u, m: self.messages.put((decode(m.payload), m.retain))
        topics = [(topic_for(DEV, Channel.STATUS), 1), (topic_for(DEV, Channel.META), 1)]
        self.client.on_connect = lambda client, _u, _f, _r, _p: client.subscribe(
            topics
        )  # again after a reconnect
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def next(self, kind: str, timeout_s: float = 10) -> tuple[Message, bool]:
        """The oldest unread message of `kind` (messages of other kinds stay unread)."""
        deadline = time.monotonic() + timeout_s
        while True:
            for i, (message, retained) in enumerate(self.unread):
                if message.kind == kind:
                    del self.unread[i]
                    return message, retained
            self.unread.append(self.messages.get(timeout=max(0.01, deadline - time.monotonic())))

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def link(mosquitto: MosquittoBroker, tmp_path: Path) -> Link:
    config = AgentConfig(device=DEV, broker_port=mosquitto.port, spool_path=tmp_path / "spool.sqlite")
    return Link(config, Spool(config.resolved_spool_path(), DEV), meta={"commands": ["run"]})


def test_birth_status_and_clean_offline(mosquitto: MosquittoBroker, link: Link) -> None:
    link.start()
    assert link.wait_connected(10)
    observer = Observer(mosquitto)
    try:
        observer.next("meta")
        observer.next("status")
        late = Observer(mosquitto)  # subscribes once the broker has both: it must get retained copies
        meta, meta_retained = late.next("meta")
        status, status_retained = late.next("status")
        late.close()
        assert isinstance(meta, DeviceMeta) and isinstance(status, Status)
        assert meta_retained and status_retained
        assert (meta.birth, meta.commands, status.state, status.birth) == (1, ["run"], "online", 1)
        link.set_status("busy", run_id="r1")
        busy, _ = observer.next("status")
        assert isinstance(busy, Status) and (busy.state, busy.run_id) == ("busy", "r1")
        mosquitto.restart()
        reborn, _ = observer.next("status", timeout_s=15)
        while reborn.birth == 1:  # the observer reconnects too and may first see the old retained copy
            reborn, _ = observer.next("status", timeout_s=15)
        assert isinstance(reborn, Status) and reborn.state == "busy" and reborn.birth >= 2
        assert link.close(5)
        offline, _ = observer.next("status")
        assert isinstance(offline, Status) and (offline.state, offline.birth) == ("offline", reborn.birth)
    finally:
        observer.close()


def test_the_status_says_how_many_records_the_spool_dropped(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    """A board whose spool filled while it was cut off says so when it is back: the drops are counted
    in its retained status beside the backlog."""
    config = AgentConfig(device=DEV, broker_port=mosquitto.port, spool_path=tmp_path / "spool.sqlite")
    spool = Spool(config.resolved_spool_path(), DEV, max_rows=5)
    for i in range(12):  # logs are droppable: the oldest 7 go
        spool.emit(Log, level="info", message=f"line {i}")
    observer = Observer(mosquitto)
    link = Link(config, spool)
    try:
        link.start()
        assert link.wait_connected(10)
        status, _ = observer.next("status")
        assert isinstance(status, Status) and (status.dropped, status.backlog) == (7, 5)
        assert link.flush(10)
        assert link.close(5)
        offline, _ = observer.next("status")
        assert isinstance(offline, Status) and (offline.dropped, offline.backlog) == (7, 0)
    finally:
        observer.close()


def test_commands_are_delivered_unless_expired(
    mosquitto: MosquittoBroker, link: Link, caplog: pytest.LogCaptureFixture
) -> None:
    received: queue.Queue[Command] = queue.Queue()
    link.on_command(received.put)
    link.start()
    assert link.wait_connected(10)
    time.sleep(0.1)  # the subscription follows the connect
    sender = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    sender.connect(mosquitto.host, mosquitto.port)
    sender.loop_start()

    def send(command_id: str, expires_in_s: float, device: str = DEV, plan: str = "p") -> None:
        expires_at = time.time_ns() + int(expires_in_s * 1e9)
        envelope = {"device": device, "stream": "00000000000000cc", "seq": 1, "ts": time.time_ns()}
        command = Command(
            **envelope, command_id=command_id, name="run", args={"plan": plan}, expires_at=expires_at
        )
        sender.publish(command_topic(DEV, "run"), encode(command), qos=1).wait_for_publish(5)

    try:
        with caplog.at_level(logging.WARNING, logger="ctxscope.agent.transport.link"):
            send("stale", expires_in_s=-5)
            send("misaddressed", expires_in_s=60, device="someone-else")
            send("huge", expires_in_s=60, plan="x" * MAX_COMMAND_BYTES)  # ignored unread
            send("fresh", expires_in_s=60)
            command = received.get(timeout=5)
            send("fresh", expires_in_s=60)  # a replay: refused, and not answered a second time
            deadline = time.monotonic() + 5
            while link.rejected()["refused_replay"] == 0 and time.monotonic() < deadline:
                time.sleep(0.02)
        assert (command.command_id, command.args) == ("fresh", {"plan": "p"})
        assert received.empty()
        assert "refused command stale (run): expired" in caplog.text
        assert "ignoring command misaddressed" in caplog.text
        assert link.rejected()["too_large"] == 1 and link.rejected()["refused_replay"] == 1
        with sqlite3.connect(link.spool.path) as db:  # forwarded or not: every ack the link spooled
            rows = db.execute("SELECT payload FROM outbox WHERE kind = 'command_ack' ORDER BY seq").fetchall()
        acks = [decode(payload) for (payload,) in rows]
        assert [a.command_id for a in acks if isinstance(a, CommandAck)] == ["stale"]
    finally:
        sender.loop_stop()
        sender.disconnect()
        link.close(5)


def test_a_failing_command_handler_does_not_end_the_link(
    mosquitto: MosquittoBroker, link: Link, caplog: pytest.LogCaptureFixture
) -> None:
    received: queue.Queue[Command] = queue.Queue()

    def handler(command: Command) -> None:
        if command.command_id == "boom":
            raise RuntimeError("handler bug")
        received.put(command)

    link.on_command(handler)
    link.start()
    assert link.wait_connected(10)
    time.sleep(0.1)  # the subscription follows the connect
    sender = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    sender.connect(mosquitto.host, mosquitto.port)
    sender.loop_start()
    try:
        for command_id in ("boom", "after"):
            command = Command(
                device=DEV, stream="00000000000000cc", seq=1, ts=time.time_ns(), command_id=command_id,
                name="run", args={}, expires_at=time.time_ns() + 60 * 10**9,
            )  # fmt: skip
            sender.publish(command_topic(DEV, "run"), encode(command), qos=1).wait_for_publish(5)
        # paho's network thread survived the exception: later commands still arrive
        assert received.get(timeout=5).command_id == "after"
        assert "command boom (run) failed in its handler" in caplog.text
        assert link.connected
    finally:
        sender.loop_stop()
        sender.disconnect()
        link.close(5)


def test_a_broker_that_refuses_the_device_is_named_as_the_reason_at_every_attempt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A revoked device: every attempt ends in a refusal, and paho's disconnect after each one must not
    replace the broker's reason with a meaningless "Unspecified error" (in the log or `last_error`)."""
    binary = mosquitto_binary()
    if binary is None:
        pytest.skip("mosquitto is not installed")
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous false\nuser {getpass.getuser()}\n")
    broker = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    config = AgentConfig(device=DEV, broker_port=port, spool_path=tmp_path / "spool.sqlite")
    link = Link(config, Spool(config.resolved_spool_path(), DEV), meta={})
    try:
        with caplog.at_level(logging.INFO, logger="ctxscope.agent.transport.link"):
            link.start()
            deadline = time.monotonic() + 15
            while link._failures < 3:  # attempts after 1 and 2 s of back-off
                assert time.monotonic() < deadline, f"{link._failures} refusals seen"
                time.sleep(0.1)
            time.sleep(0.3)  # the disconnect that follows the third refusal
        assert link.last_error == "refused by the broker: Not authorized"
        assert "Unspecified error" not in caplog.text and "disconnected from the broker" not in caplog.text
        assert caplog.text.count("refused by the broker: Not authorized") == 1  # once a minute at most
    finally:
        link.close(1)
        broker.terminate()
        broker.wait(10)


def test_the_offline_status_counts_what_is_left_after_the_flush(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    """A clean stop right after a run: the records still in flight are flushed first, so the retained
    offline status says 0 queued, not what was in flight when the stop began."""
    config = AgentConfig(device=DEV, broker_port=mosquitto.port, spool_path=tmp_path / "spool.sqlite")
    spool = Spool(config.resolved_spool_path(), DEV)
    observer = Observer(mosquitto)
    link = Link(config, spool)
    try:
        link.start()
        assert link.wait_connected(10)
        for i in range(500):
            spool.emit(Log, level="info", message=f"line {i}")
        assert link.close(10)
        assert spool.backlog() == 0
        offline, _ = observer.next("status")
        while offline.state != "offline":  # type: ignore[attr-defined]
            offline, _ = observer.next("status")
        assert isinstance(offline, Status) and offline.backlog == 0
    finally:
        observer.close()
