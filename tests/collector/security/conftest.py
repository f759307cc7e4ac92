"""A real mosquitto with TLS, password file and ACL from a site made by the product's own code."""

from __future__ import annotations

import contextlib
import getpass
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from ctxscope.broker import free_port, mosquitto_binary
from ctxscope.collector.security.broker_config import COLLECTOR_USER
from ctxscope.collector.security.site import Site
from ctxscope.compat import tomllib
from ctxscope.shared.broker_access import BrokerAccess
from tests.support import wait_for

DEVICES = ("dev-a", "dev-b")
HOST = "127.0.0.1"


@dataclass
class SecureBroker:
    site: Site
    port: int
    process: subprocess.Popen[bytes]
    bundles: dict[str, Path]

    def device_access(self, device: str) -> BrokerAccess:
        config = tomllib.loads((self.bundles[device] / "agent.toml").read_text())
        return BrokerAccess(config["username"], config["password"], True, self.site.ca_cert)


def connect(
    port: int, access: BrokerAccess, client_id: str = "", timeout_s: float = 5.0
) -> tuple[mqtt.Client, mqtt.ReasonCode | None]:
    """Connect and wait for the CONNACK; returns the running client and the broker's answer
    (None when the TLS or TCP connection itself failed)."""
    answered = threading.Event()
    reasons: list[mqtt.ReasonCode] = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
    access.apply(client)

    def on_connect(_c: mqtt.Client, _u: object, _f: object, reason: mqtt.ReasonCode, _p: object) -> None:
        reasons.append(reason)
        answered.set()

    client.on_connect = on_connect
    try:
        client.connect(HOST, port, keepalive=10)
    except OSError:
        return client, None
    client.loop_start()
    answered.wait(timeout_s)
    return client, reasons[0] if reasons else None


def stop_client(client: mqtt.Client) -> None:
    client.disconnect()
    client.loop_stop()


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    binary = mosquitto_binary()
    if binary is None:
        pytest.skip("mosquitto is not installed")
    root = tmp_path_factory.mktemp("site")
    site = Site(root / "site")
    site.init([HOST, "localhost"])
    port = free_port()
    bundles = {d: site.enroll(d, root / f"bundle-{d}", HOST, port).bundle for d in DEVICES}
    conf = site.write_broker_conf(port, HOST)
    # Started as root, mosquitto would switch to user `mosquitto`, which cannot read these files.
    conf.write_text(conf.read_text() + f"user {getpass.getuser()}\n")
    process = subprocess.Popen(
        [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    collector = site.access(COLLECTOR_USER)
    deadline = time.monotonic() + 10
    while True:
        client, reason = connect(port, collector)
        stop_client(client)
        if reason is not None and not reason.is_failure:
            break
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            log = root / "site" / "data" / "mosquitto.log"
            pytest.fail(f"the TLS broker did not start: {log.read_text() if log.exists() else 'no log'}")
        time.sleep(0.1)
    yield SecureBroker(site, port, process, bundles)
    process.terminate()
    process.wait(10)


@contextlib.contextmanager
def collector_run(log: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """`ctxscope collector run ARGS` in a child process, its output in `log`; the block starts once it
    connected (or exited) and ends it with SIGTERM."""
    command = [sys.executable, "-c", "from ctxscope.cli import main; main()", "collector", "run", *args]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for(
                lambda: b"collector connected" in log.read_bytes() or process.poll() is not None, 60, "run"
            )
            yield process
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
