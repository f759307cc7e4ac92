"""An agent cut off from its broker by the network for 60 s while it keeps measuring: the collector sees
it go offline (its last will), and after the link returns every record arrives once.

The agent runs in its own network namespace, joined to the broker by a veth pair; the cut is the host
end of the pair going down, so nothing answers and nothing is refused: both sides learn of it only from
their keepalives, as on a board whose Wi-Fi drops. Needs root and `ip` (skipped otherwise).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ctxscope.agent.transport.spool import Spool
from ctxscope.broker import MosquittoBroker, mosquitto_binary
from ctxscope.collector.ingest import Ingest
from ctxscope.collector.store import open_store
from tests.support import wait_for

pytestmark = pytest.mark.slow
HERE = Path(__file__).resolve().parent
CUT_S = 60.0


@dataclass(frozen=True)
class Link:
    namespace: str
    host_end: str
    host_ip: str


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@pytest.fixture
def veth() -> Iterator[Link]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2")
    tag = secrets.token_hex(3)
    namespace, host_end, agent_end = f"ctxcut-{tag}", f"ctxh{tag}", f"ctxa{tag}"
    subnet = f"10.213.{secrets.randbelow(250)}"
    try:
        _ip("netns", "add", namespace)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot create a network namespace: {exc.stderr.strip()}")
    try:
        _ip("link", "add", host_end, "type", "veth", "peer", "name", agent_end)
        _ip("link", "set", agent_end, "netns", namespace)
        _ip("addr", "add", f"{subnet}.1/30", "dev", host_end)
        _ip("link", "set", host_end, "up")
        for command in (["addr", "add", f"{subnet}.2/30", "dev", agent_end], ["link", "set", agent_end, "up"],
                        ["link", "set", "lo", "up"]):  # fmt: skip
            _ip("netns", "exec", namespace, "ip", *command)
        yield Link(namespace, host_end, f"{subnet}.1")
    finally:
        subprocess.run(["ip", "link", "del", host_end], capture_output=True)
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True)


def test_an_agent_cut_off_for_a_minute_loses_and_duplicates_nothing(veth: Link, tmp_path: Path) -> None:
    if mosquitto_binary() is None:
        pytest.skip("mosquitto is not installed")
    broker = MosquittoBroker(tmp_path / "broker", host=veth.host_ip)
    broker.start()
    store = open_store(f"sqlite:///{tmp_path / 'collector.db'}")
    collector = Ingest(store, broker.host, broker.port, client_id="cut_collector")
    device, total, rate_hz = "cut-agent", 800, 10.0
    spool_path = tmp_path / "agent-spool.sqlite"
    command = ["ip", "netns", "exec", veth.namespace, sys.executable, str(HERE / "agent_child.py"),
               "--host", broker.host, "--port", str(broker.port), "--spool", str(spool_path),
               "--device", device, "--total", str(total), "--rate-hz", str(rate_hz),
               "--flush-timeout-s", "90"]  # fmt: skip
    agent_log = tmp_path / "agent.log"
    spooled: list[float] = []  # when each record was spooled (the agent measuring)
    child = None
    try:
        collector.start()
        assert collector.wait_connected(10)
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=agent_log.open("w"), text=True)
        stdout = child.stdout
        reader = threading.Thread(target=lambda: [spooled.append(time.monotonic()) for _ in stdout or []])
        reader.start()
        wait_for(lambda: store.record_count(device) >= 50, 30, "records before the cut")
        _ip("link", "set", veth.host_end, "down")
        cut_at = time.monotonic()
        wait_for(lambda: store.devices()[0]["state"] == "offline", 30, "the agent's last will during the cut")
        stored_in_cut = store.record_count(device)
        time.sleep(max(0.0, CUT_S - (time.monotonic() - cut_at)))
        measured_in_cut = sum(cut_at <= t <= cut_at + CUT_S for t in spooled)
        assert store.record_count(device) == stored_in_cut, "records arrived through a cut link"
        _ip("link", "set", veth.host_end, "up")
        assert child.wait(180) == 0, agent_log.read_text()[-3000:]
        reader.join(10)
        wait_for(lambda: store.record_count(device) == total, 30, f"{total} records in the store")
        assert measured_in_cut >= 0.8 * CUT_S * rate_hz, "the agent stopped measuring while cut off"
        reopened = Spool(spool_path, device)
        assert reopened.backlog() == 0
        assert store.record_seqs(device, reopened.stream) == list(range(1, total + 1))
        assert store.gaps(device) == []
        assert collector.counters().rejected == {}
        reopened.close()
    finally:
        if child is not None and child.poll() is None:
            child.kill()
        collector.stop()
        store.close()
        broker.stop()
