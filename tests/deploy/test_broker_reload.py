"""docker/broker-reload.sh, the compose broker's command, run on this host: a real mosquitto with the
compose configuration (its /mosquitto paths moved under a scratch root, its listener on a free loopback
port) over a site made by the product's own code.

enroll and revoke on the host cannot signal a broker in a container; the script's watch must apply the
change by itself, and stop and fail as a container's main process should.
"""

from __future__ import annotations

import getpass
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ctxscope.broker import free_port, mosquitto_binary
from ctxscope.collector.security.broker_config import COLLECTOR_USER
from ctxscope.collector.security.site import Site
from ctxscope.compat import tomllib
from ctxscope.shared.broker_access import BrokerAccess
from tests.collector.security.conftest import HOST, connect, stop_client
from tests.support import wait_for

DOCKER = Path(__file__).resolve().parents[2] / "docker"


@dataclass
class ComposeBroker:
    site: Site
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def mosquitto_pid(self) -> int:
        found = subprocess.run(
            ["pgrep", "-P", str(self.process.pid), "mosquitto"], capture_output=True, text=True, check=False
        ).stdout.split()
        assert len(found) == 1, f"mosquitto under the script: {found}"
        return int(found[0])


def device_access(bundle: Path, site: Site) -> BrokerAccess:
    config = tomllib.loads((bundle / "agent.toml").read_text())
    return BrokerAccess(config["username"], config["password"], True, site.ca_cert)


def connected(port: int, access: BrokerAccess) -> object:
    """A live connection of `access`, retried while the broker is starting or applying a change."""
    holder: list[object] = []

    def attempt() -> bool:
        client, reason = connect(port, access)
        if reason is not None and not reason.is_failure:
            holder.append(client)
            return True
        stop_client(client)
        return False

    wait_for(attempt, 10, f"{access.username} to connect")
    return holder[0]


@pytest.fixture
def compose_broker(tmp_path: Path) -> Iterator[ComposeBroker]:
    binary = mosquitto_binary()
    if binary is None:
        pytest.skip("mosquitto is not installed")
    site = Site(tmp_path / "site")
    site.init([HOST, "localhost"])
    port = free_port()
    # The compose layout: the site's broker folder at /mosquitto/config with the shipped mosquitto.conf
    # beside its files, and a data volume at /mosquitto/data; no pid file, so the site cannot signal it.
    root = tmp_path / "container"
    (root / "mosquitto" / "data").mkdir(parents=True)
    (root / "mosquitto" / "config").symlink_to(site.broker_dir)
    conf = (DOCKER / "mosquitto.conf").read_text().replace("/mosquitto/", f"{root}/mosquitto/")
    conf = conf.replace("listener 8883 0.0.0.0", f"listener {port} {HOST}")
    # Started as root, mosquitto would switch to user `mosquitto`, which cannot read these files.
    (site.broker_dir / "mosquitto.conf").write_text(conf + f"user {getpass.getuser()}\n")
    log = tmp_path / "broker.log"
    env = {
        **os.environ,
        "PATH": f"{Path(binary).parent}:{os.environ['PATH']}",
        "CTXSCOPE_BROKER_WATCH_S": "0.5",
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["/bin/sh", str(DOCKER / "broker-reload.sh"), str(root / "mosquitto" / "config")],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    broker = ComposeBroker(site, port, process, log)
    try:
        stop_client(connected(port, site.access(COLLECTOR_USER)))  # type: ignore[arg-type]
        yield broker
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        subprocess.run(["pkill", "-KILL", "-f", f"mosquitto -c {root}"], check=False)


def test_an_enroll_and_a_revoke_on_the_host_reach_the_broker_in_the_container(
    compose_broker: ComposeBroker, tmp_path: Path
) -> None:
    """The site cannot signal the broker (no pid file); the script sees the rewritten files and
    reloads it: a new device gets in, a revoked one's open connection is cut and it cannot return."""
    site = compose_broker.site
    assert not site.enroll("dev-r", tmp_path / "bundle", HOST, compose_broker.port).broker_reloaded
    access = device_access(tmp_path / "bundle", site)
    live = connected(compose_broker.port, access)  # only after a reload does the broker know dev-r
    dropped = threading.Event()
    live.on_disconnect = lambda *_args: dropped.set()  # type: ignore[attr-defined]
    assert not site.revoke("dev-r")
    assert dropped.wait(10), "the revoked device's connection stayed open"
    stop_client(live)  # type: ignore[arg-type]
    client, reason = connect(compose_broker.port, access)
    stop_client(client)
    assert reason is not None and reason.is_failure
    assert b"told to reload (SIGHUP)" in compose_broker.log.read_bytes()


def test_a_stop_ends_mosquitto_and_the_script_cleanly(compose_broker: ComposeBroker) -> None:
    mosquitto = compose_broker.mosquitto_pid()
    started = time.monotonic()
    compose_broker.process.send_signal(signal.SIGTERM)
    assert compose_broker.process.wait(10) == 0
    assert time.monotonic() - started < 5, "the stop waited for the watch's sleep"
    assert not Path(f"/proc/{mosquitto}").exists()


def test_a_broker_that_dies_ends_the_script_with_a_failure(compose_broker: ComposeBroker) -> None:
    """So that the container's restart policy starts both again, rather than a watch over nothing."""
    os.kill(compose_broker.mosquitto_pid(), signal.SIGKILL)
    assert compose_broker.process.wait(10) != 0
