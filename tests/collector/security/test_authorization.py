"""The authorization matrix on a real mosquitto with TLS, password file and ACL made by `enroll`.

Anonymous clients are refused; device A cannot publish as B, read B's commands or send commands;
replayed, expired, far-future and retained commands are not run (a replay after a restart neither);
the forged-sequence attack and a forged retained status lose nothing; a revoked device is shut out;
only a collector announces its presence, and every device reads it.
"""

from __future__ import annotations

import logging
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from click.testing import CliRunner

from ctxscope.agent.config import AgentConfig
from ctxscope.agent.transport.link import Link
from ctxscope.agent.transport.spool import Spool
from ctxscope.collector.commands import CommandPublisher, send_plan
from ctxscope.collector.ingest import Ingest
from ctxscope.collector.security.broker_check import accepts_anonymous, check_broker
from ctxscope.collector.security.broker_config import COLLECTOR_USER, OPERATOR_USER
from ctxscope.collector.store import Store, open_store
from ctxscope.shared.broker_access import BrokerAccess
from ctxscope.shared.codec import encode
from ctxscope.shared.messages import MAX_BIRTH, CollectorPresence, Command, PointResult, Status
from ctxscope.shared.topics import Channel, command_topic, presence_topic, subscription, topic_for
from tests.support import result_fields, wait_for

from .conftest import HOST, SecureBroker, collector_run, connect, stop_client

pytestmark = pytest.mark.slow
A, B = "dev-a", "dev-b"
V = "dev-victim"


def agent_link(broker: SecureBroker, device: str, spool_path: Path) -> Link:
    access = broker.device_access(device)
    config = AgentConfig(
        device=device,
        broker_host=HOST,
        broker_port=broker.port,
        username=access.username,
        password=access.password,
        tls=True,
        tls_ca=broker.site.ca_cert,
        spool_path=spool_path,
        keepalive_s=5,
    )
    return Link(config, Spool(spool_path, device))


def command(device: str, command_id: str, expires_in_s: float, seq: int = 1) -> Command:
    now = time.time_ns()
    return Command(
        device=device, stream="00000000000000cc", seq=seq, ts=now, command_id=command_id,
        name="run_plan", args={"plan": "p"}, expires_at=now + int(expires_in_s * 1e9),
    )  # fmt: skip


def test_anonymous_wrong_password_plain_tcp_and_foreign_ca_are_refused(
    secure_broker: SecureBroker, tmp_path: Path
) -> None:
    port, ca = secure_broker.port, secure_broker.site.ca_cert
    good = secure_broker.device_access(A)
    attempts = {
        "anonymous": BrokerAccess(tls=True, ca_file=ca),
        "wrong password": BrokerAccess(A, "guess", True, ca),
        "unknown user": BrokerAccess("dev-z", good.password, True, ca),
    }
    for what, access in attempts.items():
        client, reason = connect(port, access)
        stop_client(client)
        assert reason is not None and reason.is_failure, f"{what} was let in"
    plain, reason = connect(port, BrokerAccess(good.username, good.password))  # no TLS: no CONNACK
    stop_client(plain)
    assert reason is None
    foreign = tmp_path / "other-ca.crt"  # a broker certificate from another CA is not trusted
    from ctxscope.collector.security import pki

    pki.write_cert(foreign, pki.new_ca("someone else")[1])
    client, reason = connect(port, BrokerAccess(good.username, good.password, True, foreign))
    stop_client(client)
    assert reason is None  # the TLS handshake fails: the credentials are never sent
    client, reason = connect(port, good)
    stop_client(client)
    assert reason is not None and not reason.is_failure
    assert not accepts_anonymous(HOST, port, good)
    conf = secure_broker.site.broker_dir / "mosquitto.conf"
    assert check_broker(HOST, port, good, conf) == []


@pytest.mark.skipif(shutil.which("logrotate") is None, reason="logrotate is not installed")
def test_the_site_logrotate_stanza_caps_the_broker_log_while_it_runs(
    secure_broker: SecureBroker, tmp_path: Path
) -> None:
    """The broker logs every connection, refused ones too: a flood of them (here, padding past the
    stanza's size) is rotated away, and the running broker logs on into the truncated file."""
    log = secure_broker.site.root / "data" / "mosquitto.log"
    with log.open("ab") as out:
        out.write(b"x" * (21 * 2**20))
    stanza = tmp_path / "ctxscope-broker"
    stanza.write_text((secure_broker.site.broker_dir / "logrotate.conf").read_text())
    rotated = subprocess.run(
        ["logrotate", "--state", str(tmp_path / "state"), str(stanza)], capture_output=True, text=True
    )
    assert rotated.returncode == 0, rotated.stderr
    assert (log.parent / "mosquitto.log.1.gz").stat().st_size < 2**20
    client, reason = connect(secure_broker.port, BrokerAccess(tls=True, ca_file=secure_broker.site.ca_cert))
    stop_client(client)
    assert reason is not None and reason.is_failure
    wait_for(lambda: b"not authorised" in log.read_bytes(), 10, "the refusal in the rotated log")
    assert log.stat().st_size < 2**20, "the broker wrote on at its old offset"


def test_a_device_can_neither_read_nor_send_commands_of_another(
    secure_broker: SecureBroker, tmp_path: Path
) -> None:
    received: queue.Queue[Command] = queue.Queue()
    link = agent_link(secure_broker, B, tmp_path / "b.sqlite")
    link.on_command(received.put)
    link.start()
    spy, reason = connect(secure_broker.port, secure_broker.device_access(A))
    assert reason is not None and not reason.is_failure
    overheard: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    spy.on_message = lambda _c, _u, m: overheard.put(m)
    spy.subscribe([(subscription(Channel.CMD, B), 1), (subscription(None, B), 1), ("#", 1)])
    publisher = CommandPublisher(
        HOST, secure_broker.port, secure_broker.site.access(COLLECTOR_USER).for_commands()
    )
    try:
        assert link.wait_connected(10)
        time.sleep(0.3)  # the agent's SUBSCRIBE follows its CONNACK
        # A sends B a command (and one to itself): the ACL drops both, silently on MQTT 3.1.1.
        for target in (B, A):
            spy.publish(
                command_topic(target, "run_plan"), encode(command(target, f"forged-{target}", 60)), qos=1
            )
        sent = publisher.send_plan(B, {"name": "real"}, ttl_s=60)
        got = received.get(timeout=10)
        assert got.command_id == sent.command_id  # the collector's command does reach B
        time.sleep(1.0)
        assert received.empty(), "a command published by another device reached the agent"
        leaked = [m.topic for m in iter_queue(overheard) if not m.topic.startswith(f"ctxscope/v1/{A}/")]
        assert leaked == [], f"device A read another device's topics: {leaked}"
    finally:
        stop_client(spy)
        publisher.close()
        link.close(5)


def iter_queue(q: queue.Queue[mqtt.MQTTMessage]) -> list[mqtt.MQTTMessage]:
    items = []
    while not q.empty():
        items.append(q.get_nowait())
    return items


def test_replayed_expired_far_future_and_retained_commands_are_not_run(
    secure_broker: SecureBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool_path = tmp_path / "b.sqlite"
    received: queue.Queue[Command] = queue.Queue()
    operator, reason = connect(secure_broker.port, secure_broker.site.access(OPERATOR_USER))
    assert reason is not None and not reason.is_failure
    topic = command_topic(B, "run_plan")

    def send(message: Command, retain: bool = False) -> None:
        operator.publish(topic, encode(message), qos=1, retain=retain).wait_for_publish(5)

    fresh = command(B, "fresh", 60)
    link = agent_link(secure_broker, B, spool_path)
    link.on_command(received.put)
    caplog.set_level(logging.WARNING, logger="ctxscope.agent.transport.link")
    try:
        link.start()
        assert link.wait_connected(10)
        time.sleep(0.3)
        send(command(B, "expired", -5))
        send(command(B, "far-future", 2**62 / 1e9))
        send(command(B, "one-day", 86_400))
        send(fresh)
        send(fresh)  # the same bytes again: a replay
        assert received.get(timeout=10).command_id == "fresh"
        wait_for(
            lambda: "command id fresh was already received once" in caplog.text, 10, "the replay's refusal"
        )
        assert received.empty()
        for refused, reason_text in (
            ("expired", "expired"),
            ("far-future", "at most 3600 s"),
            ("one-day", "at most 3600 s"),
        ):
            assert f"refused command {refused} (run_plan): " in caplog.text
            assert (
                reason_text in caplog.text.split(f"refused command {refused} (run_plan): ")[1].splitlines()[0]
            )
    finally:
        link.close(5)
    # A retained command is delivered to the agent at its next connect; it must not run, and the
    # replay of `fresh` after the restart is refused from the persisted ids.
    send(command(B, "retained", 60), retain=True)
    link = agent_link(secure_broker, B, spool_path)
    link.on_command(received.put)
    try:
        link.start()
        assert link.wait_connected(10)
        wait_for(
            lambda: "refused command retained (run_plan): a retained command" in caplog.text, 10, "retained"
        )
        time.sleep(0.3)
        send(fresh)
        wait_for(lambda: caplog.text.count("command id fresh was already received once") == 2, 10, "replay")
        assert received.empty()
    finally:
        operator.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)  # clear the retained copy
        stop_client(operator)
        link.close(5)


def test_forged_records_and_status_lose_nothing(secure_broker: SecureBroker, tmp_path: Path) -> None:
    """The issue's attack: A learns B's stream and publishes records at B's next sequence numbers
    (and a retained offline status with the largest valid birth) before B sends its real ones. B is a device
    enrolled for this test: its birth counter starts with a fresh spool and a fresh broker topic."""
    secure_broker.bundles[V] = secure_broker.site.enroll(
        V, tmp_path / "bundle", HOST, secure_broker.port
    ).bundle
    store = open_store(f"sqlite:///{tmp_path / 'collector.sqlite'}")
    collector = secure_broker.site.access(COLLECTOR_USER)
    ingest = Ingest(
        store, HOST, secure_broker.port, COLLECTOR_USER, username=collector.username,
        password=collector.password, tls=True, tls_ca=str(collector.ca_file),
    )  # fmt: skip
    spool = Spool(tmp_path / "b.sqlite", V)
    stream = spool.stream  # the attacker's best case: it knows V's stream id
    spool.close()
    link = agent_link(secure_broker, V, tmp_path / "b.sqlite")
    forged = [
        PointResult(
            device=V, stream=stream, seq=s, ts=time.time_ns(), **{**result_fields(s), "model": "forged"}
        )
        for s in range(1, 51)
    ]
    pin = Status(device=V, stream=stream, seq=0, ts=time.time_ns(), state="offline", birth=MAX_BIRTH)
    try:
        ingest.start()
        assert ingest.wait_connected(10)
        # On its own topic, in V's name: the broker lets it through, the collector rejects it.
        attacker, reason = connect(secure_broker.port, secure_broker.device_access(A))
        assert reason is not None and not reason.is_failure
        for message in forged:
            attacker.publish(topic_for(A, Channel.RESULT), encode(message), qos=1)
        wait_for(
            lambda: ingest.counters().rejected["device_mismatch"] == 50, 15, "the forged records' rejects"
        )
        stop_client(attacker)
        # On V's topics: the ACL denies it (mosquitto 2.0.11 answers with PUBACK reason 0x87, on
        # which paho ends a 3.1.1 connection); nothing reaches the collector.
        attacker, reason = connect(secure_broker.port, secure_broker.device_access(A))
        assert reason is not None and not reason.is_failure
        for message in forged:
            attacker.publish(topic_for(V, Channel.RESULT), encode(message), qos=1)
        attacker.publish(topic_for(V, Channel.STATUS), encode(pin), qos=1, retain=True)
        time.sleep(1.0)
        stop_client(attacker)
        link.start()
        assert link.wait_connected(10)
        for s in range(50):
            link.spool.emit(PointResult, **result_fields(s))
        assert link.flush(30)
        wait_for(lambda: len(store.results(V)) == 50, 30, "the victim's 50 real results")
        assert {r["model"] for r in store.results(V)} == {"qwen2.5-0.5b"}
        assert store.record_seqs(V, stream) == list(range(1, store.record_seqs(V, stream)[-1] + 1))
        assert store.results(A) == []
        wait_for(lambda: store_state(store, V) == "online", 10, "the victim online")
        counters = ingest.counters()
        assert counters.duplicates == 0 and counters.rejected["device_mismatch"] == 50
        assert len(store.results(V)) == 50
    finally:
        link.close(5)
        ingest.stop()
        store.close()


def store_state(store: Store, device: str) -> str | None:
    return next((d["state"] for d in store.devices() if d["device"] == device), None)


def test_a_revoked_device_is_shut_out(secure_broker: SecureBroker, tmp_path: Path) -> None:
    """Revoke removes the password and reloads the broker: the live connection ends, none is allowed."""
    site = secure_broker.site
    site.enroll("dev-c", tmp_path / "bundle-c", HOST, secure_broker.port)
    secure_broker.bundles["dev-c"] = tmp_path / "bundle-c"
    access = secure_broker.device_access("dev-c")
    deadline = time.monotonic() + 5  # the broker handles the SIGHUP from enroll asynchronously
    while True:
        live, reason = connect(secure_broker.port, access)
        if reason is not None and not reason.is_failure:
            break
        stop_client(live)
        assert time.monotonic() < deadline, f"the enrolled device was refused: {reason}"
        time.sleep(0.2)
    dropped = threading.Event()
    live.on_disconnect = lambda *_args: dropped.set()
    assert site.revoke("dev-c")  # the broker's pid file is there: it was told to reload
    assert dropped.wait(5), "the revoked device's connection stayed open"
    stop_client(live)
    client, reason = connect(secure_broker.port, access)
    stop_client(client)
    assert reason is not None and reason.is_failure


def test_the_collector_session_cannot_be_taken_over_by_its_client_id(
    secure_broker: SecureBroker, tmp_path: Path
) -> None:
    """The broker uses the user name as client id: a device asking for the collector's id gets its
    own, and the collector's persistent session is neither kicked nor wiped."""
    store = open_store(f"sqlite:///{tmp_path / 'collector.sqlite'}")
    collector = secure_broker.site.access(COLLECTOR_USER)
    ingest = Ingest(
        store, HOST, secure_broker.port, COLLECTOR_USER, username=collector.username,
        password=collector.password, tls=True, tls_ca=str(collector.ca_file),
    )  # fmt: skip
    thieves: list[mqtt.Client] = []
    try:
        ingest.start()
        assert ingest.wait_connected(10)
        for _ in range(3):
            thief, reason = connect(
                secure_broker.port, secure_broker.device_access(A), client_id=COLLECTOR_USER
            )
            assert reason is not None and not reason.is_failure
            thieves.append(thief)
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            assert ingest.connected, "the collector lost its connection to a client using its id"
            time.sleep(0.05)
    finally:
        for thief in thieves:
            stop_client(thief)
        ingest.stop()
        store.close()


def test_collector_run_with_the_site_identity_passes_the_broker_check(
    secure_broker: SecureBroker, tmp_path: Path
) -> None:
    """`collector run --site --require-safe-broker` connects over TLS as the collector, finding
    nothing unsafe in the site's broker; the operator's `send-plan` reaches the broker too."""
    args = [
        "--broker", f"{HOST}:{secure_broker.port}", "--site", str(secure_broker.site.root),
        "--require-safe-broker", "--no-web", "--store", f"sqlite:///{tmp_path / 'c.sqlite'}",
    ]  # fmt: skip
    log = tmp_path / "collector.log"
    with collector_run(log, *args) as process:
        broker = ["--broker", f"{HOST}:{secure_broker.port}", "--site", str(secure_broker.site.root)]
        sent = CliRunner().invoke(send_plan, [B, "cpu-smoke", *broker, "--wait", "0"])
    text = log.read_text()
    assert "collector connected" in text and "UNSAFE BROKER" not in text, text
    assert process.returncode == 0, text
    assert sent.exit_code == 0 and "sent cmd-" in sent.output, sent.output


def test_only_a_collector_announces_its_presence_and_every_device_reads_it(
    secure_broker: SecureBroker, tmp_path: Path
) -> None:
    """The collector's presence reaches a device's agent, which holds its records while it is offline;
    a device cannot forge a collector's presence (to make the fleet hold, or send into the void)."""
    store = open_store(f"sqlite:///{tmp_path / 'collector.sqlite'}")
    collector = secure_broker.site.access(COLLECTOR_USER)
    link = agent_link(secure_broker, A, tmp_path / "a.sqlite")

    def started_ingest() -> Ingest:
        ingest = Ingest(
            store, HOST, secure_broker.port, COLLECTOR_USER, username=collector.username,
            password=collector.password, tls=True, tls_ca=str(collector.ca_file),
        )  # fmt: skip
        ingest.start()
        assert ingest.wait_connected(10)
        return ingest

    try:
        ingest = started_ingest()
        link.start()
        assert link.wait_connected(10)
        ingest.stop()
        wait_for(lambda: link.holding, 10, "device A to see the collector offline")
        forger, reason = connect(secure_broker.port, secure_broker.device_access(B), client_id=B)
        assert reason is not None and not reason.is_failure
        online = CollectorPresence(collector=COLLECTOR_USER, online=True, ts=time.time_ns())
        forger.publish(presence_topic(COLLECTOR_USER), encode(online), qos=0, retain=True).wait_for_publish(5)
        stop_client(forger)
        time.sleep(1.0)
        assert link.holding, "a device's forged presence reached another device"
        ingest = started_ingest()
        wait_for(lambda: not link.holding, 10, "device A to see the collector online")
        ingest.stop()
    finally:
        link.close(2)
        store.close()
