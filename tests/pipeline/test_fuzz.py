"""The fuzz suite: thousands of seeded hostile messages on every topic the collector and an agent read,
through a real mosquitto, around 1,000 valid records. Nothing dies, every reject is counted by its
reason, and every valid record is stored exactly once."""

from __future__ import annotations

import importlib.util
import random
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from ctxscope.agent.config import AgentConfig
from ctxscope.agent.transport.link import Link
from ctxscope.agent.transport.spool import Spool
from ctxscope.broker import MosquittoBroker
from ctxscope.collector.ingest import Ingest
from ctxscope.collector.store import open_store
from ctxscope.shared.codec import REASONS
from ctxscope.shared.messages import Command

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
SEED = 13
COLLECTOR_HOSTILE = 9_000
AGENT_MESSAGES = 2_000
VALID_RECORDS = 1_000
REDELIVERED = 50
AGENT_DEVICE = "fz-agent"


def load_hostile() -> ModuleType:
    """The benchmark's generator, so that the suite and the long run send the same kinds of messages."""
    name = "ctxscope_bench_hostile"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / "collector" / "hostile.py")
        assert spec is not None and spec.loader is not None
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


def wait_until(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


def test_hostile_messages_on_every_topic(
    mosquitto: MosquittoBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deaths: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", deaths.append)
    hostile = load_hostile()
    gen = hostile.Hostile(SEED)
    valid = gen.records(VALID_RECORDS)
    rng = random.Random(SEED)
    to_collector = [
        *valid,
        *rng.sample(valid, REDELIVERED),
        *gen.collector_cases(COLLECTOR_HOSTILE, oversized=True),
    ]
    rng.shuffle(to_collector)
    to_agent = list(gen.agent_cases(AGENT_DEVICE, AGENT_MESSAGES, time.time_ns()))
    assert len(to_collector) + len(to_agent) >= 10_000

    store = open_store(f"sqlite:///{tmp_path / 'fuzz.db'}")
    ingest = Ingest(store, mosquitto.host, mosquitto.port, client_id="fuzz_collector")
    config = AgentConfig(
        device=AGENT_DEVICE, broker_port=mosquitto.port, spool_path=tmp_path / "spool.sqlite"
    )
    spool = Spool(config.resolved_spool_path(), AGENT_DEVICE)
    link = Link(config, spool)
    handled: list[Command] = []
    link.on_command(handled.append)
    publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    publisher.max_queued_messages_set(0)
    ingest.start()
    link.start()
    try:
        assert ingest.wait_connected(10) and link.wait_connected(10)
        time.sleep(0.2)  # the agent subscribes to its commands right after connecting
        publisher.connect(mosquitto.host, mosquitto.port)
        publisher.loop_start()
        started = time.monotonic()
        for case in [*to_agent, *to_collector]:
            publisher.publish(case.topic, case.payload, qos=1)
        # besides the fuzz, the collector receives the agent's own birth (status and meta)
        taken = lambda: (c := ingest.counters()).received - c.state_applied - c.state_stale  # noqa: E731
        wait_until(lambda: taken() == len(to_collector), 60, "the collector to take every message")
        agent_seen = lambda: len(handled) + sum(link.rejected().values())  # noqa: E731
        wait_until(lambda: agent_seen() == len(to_agent), 30, "the agent to take all")
        elapsed = time.monotonic() - started

        # the collector: every valid record stored exactly once, every reject counted by its reason
        counters = ingest.counters()
        expected = Counter(c.expect for c in to_collector)
        assert counters.stored == VALID_RECORDS and counters.duplicates == REDELIVERED
        assert store.record_count() == VALID_RECORDS
        for device, stream in gen._stream.items():
            assert store.record_seqs(device, stream) == list(range(1, gen._seq[device] + 1))
            assert store.gaps(device) == []
        random_rejects = expected[hostile.ANY_REJECT]
        named = {r: n for r, n in expected.items() if r not in (hostile.VALID, hostile.ANY_REJECT)}
        for reason, n in named.items():
            assert counters.rejected[reason] >= n, (reason, counters.rejected)
        assert sum(counters.rejected.values()) == sum(named.values()) + random_rejects
        assert set(counters.rejected) <= REASONS | {"bad_topic", "device_mismatch", "wrong_channel"}
        stored_rejects = Counter()
        for row in store.reject_counts():
            stored_rejects[row["reason"]] += row["count"]
        assert stored_rejects == counters.rejected
        assert counters.store_errors == 0

        # the agent: every live command handed over once, the rest counted by reason
        agent_expected = Counter(c.expect for c in to_agent)
        assert len(handled) == agent_expected[hostile.VALID]
        assert len({c.command_id for c in handled}) == len(handled)
        rejected = link.rejected()
        for reason, n in agent_expected.items():
            if reason not in (hostile.VALID, hostile.ANY_REJECT):
                assert rejected[reason] >= n, (reason, rejected)
        assert sum(rejected.values()) == len(to_agent) - len(handled)

        # nothing died, and both still work
        assert deaths == []
        assert ingest.connected and link.connected
        print(f"fuzz: {len(to_collector) + len(to_agent)} messages in {elapsed:.1f} s; "
              f"collector rejects {dict(counters.rejected)}; agent rejects {dict(rejected)}")  # fmt: skip
    finally:
        publisher.loop_stop()
        publisher.disconnect()
        link.close(5)
        ingest.stop()
        store.close()
