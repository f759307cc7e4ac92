"""End to end through a real mosquitto: devices publish, the collector ingests, the open page in
headless Chromium follows; a plan sent from the page's form reaches the device and its ack and the
results it triggers show on the device page."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from ctxscope.shared import codec
from ctxscope.shared.messages import CHANNEL_OF_KIND, Command, CommandAck, Message
from ctxscope.shared.topics import Channel, subscription, topic_for

pytestmark = [pytest.mark.slow, pytest.mark.browser]
playwright_sync = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]  # fmt: skip


class WireDevice:
    """A simulated device on the wire: publishes records, and answers `run_plan` commands by
    acking them and running a small simulated sweep (the shape `agent serve` gives the collector)."""

    def __init__(self, broker: Any, simfleet: Any, device: str) -> None:
        self.sim = simfleet.SimDevice(device)
        self.simfleet = simfleet
        self.commands: list[Command] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device)
        self.client.on_connect = lambda c, *_: c.subscribe(subscription(Channel.CMD, device), qos=1)
        self.client.on_message = self._on_command
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def send(self, *messages: Message) -> None:
        for m in messages:
            self.client.publish(topic_for(m.device, CHANNEL_OF_KIND[m.kind]), codec.encode(m), qos=1)

    def _on_command(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        command = codec.decode(message.payload)
        assert isinstance(command, Command)
        self.commands.append(command)
        run_id = f"run-{len(self.commands)}"
        env = self.sim.envelope()
        self.send(
            CommandAck(**env, command_id=command.command_id, name=command.name, accepted=True, run_id=run_id)
        )
        self.send(*self.simfleet.sweep(self.sim, run_id))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def page() -> Iterator[tuple[Any, list[str]]]:
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed")
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        pg = browser.new_page()
        errors: list[str] = []
        pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        pg.on("pageerror", lambda e: errors.append(str(e)))
        yield pg, errors
        browser.close()


def wait_for(predicate: Any, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_plan_from_page_runs_on_device_and_results_appear(broker, simfleet, dashboard, page):
    pg, errors = page
    device = WireDevice(broker, simfleet, "orin-9")
    try:
        device.send(device.sim.meta(), device.sim.status("online"), device.sim.telemetry(11.0, 42.0))
        wait_for(lambda: any(d["device"] == "orin-9" for d in dashboard.service.store.devices()))
        pg.goto(dashboard.web.url + "/devices/orin-9")
        pg.wait_for_selector("#live.on")
        assert pg.locator("#maxctx tbody tr").count() == 0
        # Live telemetry through broker -> ingest -> hub -> SSE -> page.
        device.send(device.sim.telemetry(23.0, 44.0))
        pg.wait_for_function("() => document.getElementById('power').textContent === '23.0 W'", timeout=5000)
        # A plan typed into the page's form goes out as a command; the device acks and runs it.
        pg.fill("#plan-text", 'models = ["qwen2.5-0.5b", "mamba2-780m"]\ncontext = [1024, 65536]\n')
        pg.click("#plan-form button")
        pg.wait_for_function(
            "() => document.getElementById('plan-result').textContent.startsWith('sent cmd-')"
        )
        wait_for(lambda: len(device.commands) == 1)
        assert device.commands[0].args["plan"]["context"] == [1024, 65536]
        pg.wait_for_function("() => document.querySelectorAll('#acks tbody tr').length === 1", timeout=5000)
        assert "run-1" in pg.locator("#acks tbody").inner_text()
        pg.wait_for_function("() => document.querySelectorAll('#maxctx tbody tr').length === 2", timeout=5000)
        pg.wait_for_selector("#chart-ttft .main-svg")
        assert "completed" in pg.locator("#runs tbody").inner_text()
        assert "qwen2.5-0.5b" in pg.locator("#crossovers tbody").inner_text()
        # A refused plan: malformed TOML is answered by the collector with the reason.
        pg.fill("#plan-text", "models = [")
        pg.click("#plan-form button")
        pg.wait_for_function("() => document.getElementById('plan-result').textContent.startsWith('refused')")
        assert "not valid TOML" in pg.locator("#plan-result").inner_text()
        assert len(device.commands) == 1
    finally:
        device.close()
    # The refused POST logs a 400 in the console ("Failed to load resource"); nothing else may.
    assert [e for e in errors if "400" not in e] == []
