"""Plans to devices through a real mosquitto: the publisher, `collector send-plan`, and the web form's API."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from click.testing import CliRunner

from ctxscope.broker import MosquittoBroker, mosquitto_binary
from ctxscope.collector.commands import CommandPublisher, PlanError, parse_plan, send_plan
from ctxscope.collector.web.app import create_app
from ctxscope.collector.web.server import WebServer
from ctxscope.shared import codec
from ctxscope.shared.ids import new_stream_id
from ctxscope.shared.messages import Command, CommandAck
from ctxscope.shared.topics import Channel, subscription, topic_for

PLAN = 'name = "smoke"\nmodels = ["qwen2.5-0.5b"]\ncontext = [1024, 2048]\n'


class FakeAgent:
    """Stands in for `agent serve` on the wire: takes commands, answers each with a CommandAck that
    refuses plans naming an unknown model (the reason text comes back to the sender)."""

    def __init__(self, broker: Any, device: str) -> None:
        self.device = device
        self.stream = new_stream_id()
        self.received: list[tuple[Command, bool, int]] = []
        self.ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"fake-{device}")
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self.ready.wait(5)
        time.sleep(0.1)  # let the SUBACK land

    def _on_connect(self, client: mqtt.Client, *_: Any) -> None:
        client.subscribe(subscription(Channel.CMD, self.device), qos=1)
        self.ready.set()

    def _on_message(self, client: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        command = codec.decode(message.payload)
        assert isinstance(command, Command)
        self.received.append((command, message.retain, message.qos))
        models = command.args.get("plan", {}).get("models", [])
        accepted = "no-such-model" not in models
        ack = CommandAck(
            device=self.device,
            stream=self.stream,
            seq=len(self.received),
            ts=time.time_ns(),
            command_id=command.command_id,
            name=command.name,
            accepted=accepted,
            reason=None if accepted else "unknown model 'no-such-model'",
            run_id="run-1" if accepted else None,
        )
        client.publish(topic_for(self.device, Channel.RUN), codec.encode(ack), qos=1)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def agent(broker) -> Iterator[FakeAgent]:
    a = FakeAgent(broker, "orin-7")
    yield a
    a.close()


def test_parse_plan_refuses_bad_toml_with_reason():
    assert parse_plan(PLAN)["context"] == [1024, 2048]
    with pytest.raises(PlanError, match="not valid TOML"):
        parse_plan("models = [")
    with pytest.raises(PlanError, match="empty"):
        parse_plan("")
    with pytest.raises(PlanError, match="nested too deeply"):
        parse_plan("x = " + "[" * 5000 + "]" * 5000)
    with pytest.raises(PlanError, match=r"plan\.x(\[0\])+: nested deeper than 32 levels"):
        parse_plan("x = " + "[" * 40 + "]" * 40)
    with pytest.raises(PlanError, match=r"plan\.when\[1\]: a TOML date or time \(2026-12-07T10:00:00\)"):
        parse_plan("when = [1, 2026-12-07T10:00:00]")


def test_publisher_sends_expiring_qos1_unretained_command_and_gets_ack(broker, agent):
    publisher = CommandPublisher(broker.host, broker.port)
    try:
        before = time.time_ns()
        command = publisher.send_plan("orin-7", parse_plan(PLAN), ttl_s=60)
        ack = publisher.wait_ack(command.command_id, 5)
    finally:
        publisher.close()
    assert ack is not None and ack.accepted and ack.run_id == "run-1"
    (received, retained, qos) = agent.received[0]
    assert received.name == "run_plan" and received.args["plan"]["models"] == ["qwen2.5-0.5b"]
    assert not retained and qos == 1
    assert before + 59e9 < received.expires_at < time.time_ns() + 61e9


def test_publishing_after_the_broker_went_away_is_a_connection_error(tmp_path: Path):
    if mosquitto_binary() is None:
        pytest.skip("mosquitto is not installed")
    own = MosquittoBroker(tmp_path / "mosquitto")
    own.start()
    publisher = CommandPublisher(own.host, own.port)
    try:
        assert publisher.wait_connected(5)
        own.stop()
        deadline = time.monotonic() + 5
        while publisher.wait_connected(0) and time.monotonic() < deadline:
            time.sleep(0.02)
        with pytest.raises(ConnectionError):
            publisher.publish("orin-7", "run_plan", {"plan": parse_plan(PLAN)}, timeout_s=1)
    finally:
        publisher.close()
        own.stop()


def test_send_plan_cli_reports_acceptance_and_refusal(broker, agent, tmp_path: Path):
    good, bad, broken = tmp_path / "good.toml", tmp_path / "bad.toml", tmp_path / "broken.toml"
    good.write_text(PLAN)
    bad.write_text(PLAN.replace("qwen2.5-0.5b", "no-such-model"))
    broken.write_text("models = [")
    address = f"{broker.host}:{broker.port}"
    runner = CliRunner()
    ok = runner.invoke(send_plan, ["orin-7", str(good), "--broker", address, "--wait", "5"])
    assert ok.exit_code == 0, ok.output
    assert "accepted the plan: run run-1" in ok.output
    refused = runner.invoke(send_plan, ["orin-7", str(bad), "--broker", address, "--wait", "5"])
    assert refused.exit_code == 1
    assert "refused the plan: unknown model 'no-such-model'" in refused.output
    invalid = runner.invoke(send_plan, ["orin-7", str(broken), "--broker", address])
    assert invalid.exit_code == 1 and "not valid TOML" in invalid.output
    assert len(agent.received) == 2  # the broken plan never left the collector
    shipped = runner.invoke(send_plan, ["orin-7", "cpu-smoke", "--broker", address, "--wait", "5"])
    assert shipped.exit_code == 0, shipped.output
    assert agent.received[-1][0].args["plan"]["name"] == "cpu-smoke"
    unknown = runner.invoke(send_plan, ["orin-7", "no-such-plan", "--broker", address])
    assert (
        unknown.exit_code == 1
        and "neither a plan file nor a shipped plan (agx-orin-64gb, cpu-smoke" in unknown.output
    )


def test_web_plan_api_publishes_and_refuses_bad_plans_with_reason(
    broker, agent, store, hub, simfleet, feeder, web_client
):
    feeder([simfleet.SimDevice("orin-7").meta()])
    publisher = CommandPublisher(broker.host, broker.port)
    server = WebServer(create_app(store, hub, publisher)).start()
    client = web_client(server.url)
    client.page("/devices/orin-7")
    post = client.post_json
    try:
        status, answer = post("/api/devices/orin-7/plans", {"plan_toml": PLAN, "ttl_s": 30})
        assert status == 202, answer
        assert publisher.wait_ack(answer["command_id"], 5) is not None
        assert agent.received[-1][0].command_id == answer["command_id"]
        status, answer = post("/api/devices/orin-7/plans", {"plan_toml": "models = ["})
        assert status == 400 and "not valid TOML" in answer["detail"]
        status, answer = post("/api/devices/orin-7/plans", {"shipped": "no-such-plan"})
        assert status == 400 and "no shipped plan" in answer["detail"]
        assert post("/api/devices/ghost/plans", {"plan_toml": PLAN})[0] == 404
        # longer than any agent accepts (an hour): refused here, not a server error at the publisher
        assert post("/api/devices/orin-7/plans", {"plan_toml": PLAN, "ttl_s": 7200})[0] == 422
    finally:
        server.stop()
        publisher.close()


def test_the_publisher_keeps_only_the_first_ack_of_its_own_commands_and_forgets_them(broker, agent):
    """Any device may publish acks on its run channel: made-up command ids once piled up in the
    publisher for good, and a refusal of a redelivered copy could replace the real answer."""
    publisher = CommandPublisher(broker.host, broker.port)
    forger = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"forger-{new_stream_id()}")
    forger.connect(broker.host, broker.port)
    forger.loop_start()
    try:
        command = publisher.send_plan("orin-7", parse_plan(PLAN), ttl_s=60)
        assert publisher.wait_ack(command.command_id, 5) is not None
        stream = new_stream_id()
        forged = [f"cmd-forged{i}" for i in range(50)] + [command.command_id]
        for seq, command_id in enumerate(forged, 1):
            ack = CommandAck(
                device="orin-7",
                stream=stream,
                seq=seq,
                ts=time.time_ns(),
                command_id=command_id,
                name="run_plan",
                accepted=False,
                reason="x" * 1000,
            )
            forger.publish(topic_for("orin-7", Channel.RUN), codec.encode(ack), qos=1).wait_for_publish(5)
        time.sleep(0.5)  # the publisher's network thread has had them
        ack = publisher.wait_ack(command.command_id, 0)
        assert ack is not None and ack.accepted and ack.run_id == "run-1"
        assert set(publisher._acks) == {command.command_id}
        publisher._forget_expired(command.expires_at + int(61e9))
        assert publisher._acks == {} and publisher._sent == {}
    finally:
        forger.loop_stop()
        forger.disconnect()
        publisher.close()
