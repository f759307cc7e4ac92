"""Faults, each ending with every record stored exactly once: a poison message and its redelivery,
exceptions injected into every thread loop and callback, a failing store, the collector and the
broker SIGKILLed mid-stream. All through a real mosquitto (a private one, with persistence)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from ctxscope.agent.config import AgentConfig
from ctxscope.agent.transport.link import Link
from ctxscope.agent.transport.spool import Spool
from ctxscope.broker import MosquittoBroker, mosquitto_binary
from ctxscope.collector.commands import CommandPublisher
from ctxscope.collector.ingest import Ingest
from ctxscope.collector.store import Store, open_store
from ctxscope.shared import codec
from ctxscope.shared.codec import encode
from ctxscope.shared.messages import Command, CommandAck, PointResult
from ctxscope.shared.topics import Channel, command_topic, subscription, topic_for
from tests.support import point_result, result_fields, wait_for

pytestmark = pytest.mark.slow
DEV = "fault-dev"
STREAM = "00000000000000fa"
RESULT_TOPIC = topic_for(DEV, Channel.RESULT)
POISON = b"\x82\xa1v\x01\xa1x" + b"\x91" * 999 + b"\x90"  # 1,000 deep: once a RecursionError


def publish(client: mqtt.Client, topic: str, payload: bytes) -> None:
    client.publish(topic, payload, qos=1).wait_for_publish(5)


def started_ingest(store: Store, broker: MosquittoBroker, client_id: str) -> Ingest:
    ingest = Ingest(store, broker.host, broker.port, client_id=client_id)
    ingest.start()
    assert ingest.wait_connected(10)
    return ingest


def assert_exactly(store: Store, device: str, stream: str, n: int) -> None:
    assert store.record_seqs(device, stream) == list(range(1, n + 1))
    assert store.gaps(device) == []


# -- the collector's writer -------------------------------------------------------------------


def test_a_poison_message_is_rejected_once_and_never_redelivered(
    mosquitto: MosquittoBroker, publisher: mqtt.Client, tmp_path: Path
) -> None:
    """Sent while the collector is away, the poison waits in its session between two records; the
    collector rejects it, acknowledges it, and the next session does not get it again."""
    store = open_store(f"sqlite:///{tmp_path / 'c.db'}")
    started_ingest(store, mosquitto, "poison_c").stop()  # creates the persistent session
    publish(publisher, RESULT_TOPIC, encode(point_result(DEV, STREAM, 1)))
    publish(publisher, RESULT_TOPIC, POISON)
    publish(publisher, RESULT_TOPIC, encode(point_result(DEV, STREAM, 2)))
    first = started_ingest(store, mosquitto, "poison_c")
    wait_for(lambda: first.counters().received == 3, 10, "the queued messages")
    assert first.counters().rejected == {"too_deep": 1}
    publish(publisher, RESULT_TOPIC, encode(point_result(DEV, STREAM, 3)))
    wait_for(lambda: first.counters().stored == 3, 10, "the record after the poison")
    first.stop()
    second = started_ingest(store, mosquitto, "poison_c")
    time.sleep(1.0)  # time for any redelivery to arrive
    assert second.counters().received == 0
    second.stop()
    assert_exactly(store, DEV, STREAM, 3)
    assert [(r["reason"], r["count"]) for r in store.reject_counts()] == [("too_deep", 1)]
    store.close()


def test_an_exception_while_validating_rejects_only_that_message(
    mosquitto: MosquittoBroker, publisher: mqtt.Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_decode = codec.decode

    def decode(payload: bytes) -> Any:
        if payload == b"\xa4boom":
            raise RuntimeError("a validator bug")
        return real_decode(payload)

    monkeypatch.setattr("ctxscope.collector.ingest.decode", decode)
    store = open_store(f"sqlite:///{tmp_path / 'c.db'}")
    ingest = started_ingest(store, mosquitto, "bug_c")
    try:
        publish(publisher, RESULT_TOPIC, b"\xa4boom")
        publish(publisher, RESULT_TOPIC, encode(point_result(DEV, STREAM, 1)))
        wait_for(lambda: ingest.counters().stored == 1, 10, "the record after the bug")
        assert ingest.counters().rejected == {"internal_error": 1}
        (reject,) = store.reject_counts()
        assert "RuntimeError: a validator bug" in reject["last_detail"]
    finally:
        ingest.stop()
        store.close()


def test_an_exception_in_the_writer_loop_does_not_end_it(
    mosquitto: MosquittoBroker, publisher: mqtt.Client, tmp_path: Path
) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'c.db'}")
    ingest = started_ingest(store, mosquitto, "loop_c")
    real_ack = ingest._client.ack
    failures = [RuntimeError("paho bug")]

    def ack(mid: int, qos: int) -> Any:
        if failures:
            raise failures.pop()
        return real_ack(mid, qos)

    ingest._client.ack = ack  # type: ignore[method-assign]
    try:
        publish(publisher, RESULT_TOPIC, encode(point_result(DEV, STREAM, 1)))
        wait_for(lambda: store.record_count() == 1, 10, "the first record")
        publish(publisher, RESULT_TOPIC, encode(point_result(DEV, STREAM, 2)))
        wait_for(lambda: ingest.counters().stored == 1, 10, "the record after the failed loop")
        assert ingest._writer.is_alive()
    finally:
        ingest.stop()
    # the first message was stored but never acknowledged: the next session gets it again, as a duplicate
    again = started_ingest(store, mosquitto, "loop_c")
    wait_for(lambda: again.counters().duplicates == 1, 10, "the un-acked message again")
    again.stop()
    assert_exactly(store, DEV, STREAM, 2)
    store.close()


def test_a_failing_store_acknowledges_nothing_says_so_and_loses_nothing(
    mosquitto: MosquittoBroker,
    publisher: mqtt.Client,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    failing_store: Any,
) -> None:
    monkeypatch.setattr("ctxscope.collector.ingest.STORE_RETRY_S", 0.1)
    monkeypatch.setattr("ctxscope.collector.ingest.STORE_RETRY_MAX_S", 0.4)
    store = failing_store(tmp_path / "c.db", RuntimeError("database disk image is malformed"))
    ingest = started_ingest(store, mosquitto, "failing_c")
    try:
        for seq in range(1, 101):
            publish(publisher, RESULT_TOPIC, encode(point_result(DEV, STREAM, seq)))
        wait_for(lambda: ingest.health()["store_errors"] >= 3, 10, "failed writes")
        health = ingest.health()
        assert health["store_failing"] and "malformed" in health["store_error"]
        assert ingest.counters().received == 0 and store.record_count() == 0
        store.healed.set()
        wait_for(lambda: ingest.counters().stored == 100, 20, "every record after the store healed")
        assert not ingest.health()["store_failing"]
        assert ingest.counters().rejected == {}
    finally:
        ingest.stop()
    assert_exactly(store, DEV, STREAM, 100)
    assert store.reject_counts() == []
    store.close()


def test_a_failing_store_at_a_collector_restart_loses_nothing(
    mosquitto: MosquittoBroker,
    publisher: mqtt.Client,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    failing_store: Any,
) -> None:
    """Stopped while its store fails, the collector leaves the held batch to the broker's session."""
    monkeypatch.setattr("ctxscope.collector.ingest.STORE_RETRY_S", 0.1)
    failing = failing_store(tmp_path / "c.db", RuntimeError("database disk image is malformed"))
    ingest = started_ingest(failing, mosquitto, "restart_c")
    for seq in range(1, 31):
        publish(publisher, RESULT_TOPIC, encode(point_result(DEV, STREAM, seq)))
    wait_for(lambda: ingest.health()["store_errors"] >= 1, 10, "a failed write")
    ingest.stop()
    failing.close()
    store = open_store(f"sqlite:///{tmp_path / 'c.db'}")
    again = started_ingest(store, mosquitto, "restart_c")
    wait_for(lambda: store.record_count() == 30, 20, "every record in the next session")
    again.stop()
    assert_exactly(store, DEV, STREAM, 30)
    store.close()


# -- the agent's link, forwarder and the collector's command publisher -------------------------


@pytest.fixture
def link(mosquitto: MosquittoBroker, tmp_path: Path) -> Iterator[Link]:
    config = AgentConfig(device=DEV, broker_port=mosquitto.port, spool_path=tmp_path / "spool.sqlite")
    link = Link(config, Spool(config.resolved_spool_path(), DEV))
    yield link
    link.close(5)


def live_command(command_id: str, name: str = "run_plan") -> Command:
    now = time.time_ns()
    return Command(
        device=DEV, stream="00000000000000cc", seq=1, ts=now, command_id=command_id, name=name,
        args={}, expires_at=now + 60 * 10**9,
    )  # fmt: skip


def test_an_exception_in_the_links_message_callback_rejects_only_that_message(
    link: Link, publisher: mqtt.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_decode = codec.decode

    def decode(payload: bytes) -> Any:
        if payload == b"\xa4boom":
            raise RuntimeError("a decoder bug")
        return real_decode(payload)

    monkeypatch.setattr("ctxscope.agent.transport.link.decode", decode)
    handled: list[str] = []
    link.on_command(lambda c: handled.append(c.command_id))
    link.start()
    assert link.wait_connected(10)
    time.sleep(0.2)
    publish(publisher, command_topic(DEV, "run_plan"), b"\xa4boom")
    publish(publisher, command_topic(DEV, "run_plan"), POISON)
    publish(publisher, command_topic(DEV, "run_plan"), encode(live_command("after")))
    wait_for(lambda: handled == ["after"], 10, "the command after the bug and the poison")
    assert link.rejected() == {"internal_error": 1, "too_deep": 1}
    assert link.connected


def test_a_failing_birth_does_not_stop_forwarding(
    link: Link, mosquitto: MosquittoBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception while the link announces itself on connect: the spool still drains."""
    real = link.spool.state_message
    calls = {"n": 0}

    def state_message(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:  # the first is the will, the second the birth's meta
            raise RuntimeError("spool bug")
        return real(*args, **kwargs)

    monkeypatch.setattr(link.spool, "state_message", state_message)
    store = open_store(f"sqlite:///{tmp_path / 'c.db'}")
    ingest = started_ingest(store, mosquitto, "birth_c")
    try:
        link.start()
        assert link.wait_connected(10)
        for i in range(5):
            link.spool.emit(PointResult, **result_fields(i))
        assert link.flush(10)
        wait_for(lambda: store.record_count(DEV) == 5, 10, "the records")
    finally:
        ingest.stop()
        store.close()


def test_an_exception_in_the_forwarder_loop_does_not_end_it(
    link: Link, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = link.spool.oldest
    failures = [OSError("disk hiccup")] * 3

    def oldest(*args: Any, **kwargs: Any) -> Any:
        if failures:
            raise failures.pop()
        return real(*args, **kwargs)

    monkeypatch.setattr(link.spool, "oldest", oldest)
    link.start()
    assert link.wait_connected(10)
    for i in range(5):
        link.spool.emit(PointResult, **result_fields(i))
    assert link.flush(10)
    assert not failures and link._forwarder._thread.is_alive()


def test_an_exception_in_the_command_publishers_callback_does_not_end_it(
    mosquitto: MosquittoBroker, publisher: mqtt.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_decode = codec.decode
    failures = [RuntimeError("decoder bug")]

    def decode(payload: bytes) -> Any:
        if failures:
            raise failures.pop()
        return real_decode(payload)

    monkeypatch.setattr("ctxscope.collector.commands.codec.decode", decode)
    commands = CommandPublisher(mosquitto.host, mosquitto.port)
    try:
        sent = commands.send_plan(DEV, {"name": "p"})
        time.sleep(0.2)
        for command_id in ("first", sent.command_id):  # the first one hits the bug
            ack = CommandAck(
                device=DEV, stream=STREAM, seq=1, ts=1, command_id=command_id, name="run_plan", accepted=True
            )
            publish(publisher, topic_for(DEV, Channel.RUN), encode(ack))
        assert commands.wait_ack(sent.command_id, 10) is not None
        assert not failures
    finally:
        commands.close()


# -- processes killed mid-stream --------------------------------------------------------------


def collector_session(broker: MosquittoBroker, client_id: str) -> None:
    """A collector's persistent session for results (what ingest subscribes to), made by a plain client
    that announces no presence: agents do not know whether a collector is there, and send."""
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311, clean_session=False
    )
    client.connect(broker.host, broker.port)
    client.loop_start()
    client.subscribe(subscription(Channel.RESULT), qos=1)
    time.sleep(0.5)
    client.disconnect()
    client.loop_stop()


def collector_process(broker: MosquittoBroker, db: Path, client_id: str) -> subprocess.Popen[str]:
    cli = [sys.executable, "-c", "from ctxscope.cli import main; main()"]
    args = ["collector", "run", "--broker", f"{broker.host}:{broker.port}", "--store", f"sqlite:///{db}"]
    return subprocess.Popen(
        [*cli, *args, "--client-id", client_id, "--no-web"], stderr=subprocess.DEVNULL, text=True
    )


def streaming_link(broker: MosquittoBroker, tmp_path: Path, device: str) -> tuple[Link, Spool]:
    config = AgentConfig(
        device=device, broker_port=broker.port, spool_path=tmp_path / f"{device}.sqlite", keepalive_s=5
    )
    spool = Spool(config.resolved_spool_path(), device)
    link = Link(config, spool)
    link.start()
    assert link.wait_connected(10)
    return link, spool


def produce(spool: Spool, total: int, pace_s: float) -> threading.Thread:
    def run() -> None:
        for i in range(total):
            spool.emit(PointResult, **result_fields(i))
            time.sleep(pace_s)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_records_queued_but_never_autosaved_survive_a_broker_crash(tmp_path: Path) -> None:
    """The collector is away, the broker holds 100 acknowledged records for it in memory only (no
    autosave for an hour) and is killed: the agent's replay after the reconnect brings all of them.
    The collector's session is made without presence: an agent that knows the collector is offline
    holds its records instead (the next test), so here the agent must not know, as with a broker whose
    ACL predates presence."""
    if mosquitto_binary() is None:
        pytest.skip("mosquitto is not installed")
    broker = MosquittoBroker(tmp_path / "broker", autosave_interval_s=3600)
    broker.start()
    device, total = "stream-q", 100
    store = open_store(f"sqlite:///{tmp_path / 'collector.db'}")
    link: Link | None = None
    try:
        collector_session(broker, "crash_c")
        broker.restart()  # the session, saved by a clean restart
        link, spool = streaming_link(broker, tmp_path, device)
        for i in range(total):
            spool.emit(PointResult, **result_fields(i))
        assert link.flush(30), "the broker did not acknowledge every record"
        assert broker._process is not None
        broker._process.send_signal(signal.SIGKILL)
        broker._process.wait()
        broker.start()
        wait_for(lambda: link is not None and link.connected, 30, "the agent's reconnect")
        assert link.flush(30), f"spool still holds {spool.backlog()} records"
        ingest = started_ingest(store, broker, "crash_c")
        try:
            wait_for(lambda: store.record_count(device) == total, 30, "every record after the crash")
            assert_exactly(store, device, spool.stream, total)
            assert ingest.counters().rejected == {}
        finally:
            ingest.stop()
    finally:
        if link is not None:
            link.close(5)
        store.close()
        broker.stop()


def test_collector_sigkill_mid_stream_loses_and_duplicates_nothing(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    device, total = "stream-c", 600
    db = tmp_path / "collector.db"
    first = collector_process(mosquitto, db, "killed_c")
    try:
        wait_for(db.exists, 10, "the collector's database")
        store = open_store(f"sqlite:///{db}")
        link, spool = streaming_link(mosquitto, tmp_path, device)
        wait_for(lambda: bool(store.devices()), 10, "the collector to see the agent")
        producer = produce(spool, total, 0.005)
        wait_for(lambda: store.record_count(device) > 100, 15, "records before the kill")
        first.send_signal(signal.SIGKILL)
        first.wait()
        # the broker publishes the dead collector's will: the agent keeps what it makes in its spool
        wait_for(lambda: link.holding, 10, "the agent to hold its records")
        time.sleep(1.0)
        assert link.holding and spool.backlog() > 0, "the agent sent on while no collector was online"
        stored_at_kill = store.record_count(device)
        second = collector_process(mosquitto, db, "killed_c")
        try:
            producer.join()
            assert link.flush(20)
            assert not link.holding
            wait_for(lambda: store.record_count(device) == total, 20, "every record after the restart")
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(15)
        assert stored_at_kill < total, "the kill did not happen mid-stream"
        assert_exactly(store, device, spool.stream, total)
        link.close(5)
        store.close()
    finally:
        if first.poll() is None:
            first.kill()


def test_broker_sigkill_mid_stream_loses_and_duplicates_nothing(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    """mosquitto killed without warning (persistence on, autosave every second), restarted on its port.

    What the broker acknowledged and had not delivered nor autosaved dies with it (more of it the
    further the collector lags); the agent re-sends what was acknowledged shortly before the lost
    connection, and the collector drops what it already had."""
    device, total = "stream-b", 600
    store = open_store(f"sqlite:///{tmp_path / 'collector.db'}")
    ingest = started_ingest(store, mosquitto, "broker_kill_c")
    time.sleep(2.5)  # an autosave holds the collector's subscription; a younger session dies with the broker
    link, spool = streaming_link(mosquitto, tmp_path, device)
    try:
        producer = produce(spool, total, 0.005)
        wait_for(lambda: store.record_count(device) > 100, 15, "records before the kill")
        assert mosquitto._process is not None
        mosquitto._process.send_signal(signal.SIGKILL)
        mosquitto._process.wait()
        stored_at_kill = store.record_count(device)
        time.sleep(0.5)
        mosquitto.start()
        producer.join()
        assert link.flush(30), f"spool still holds {spool.backlog()} records"
        wait_for(lambda: store.record_count(device) == total, 30, "every record after the broker restart")
        assert stored_at_kill < total, "the kill did not happen mid-stream"
        assert_exactly(store, device, spool.stream, total)
        assert ingest.counters().rejected == {}
    finally:
        link.close(5)
        ingest.stop()
        store.close()
