"""Fuzz the record pipeline through a real mosquitto: seeded hostile messages on every topic the
collector and an agent read, around valid records (some sent twice), then count what became of each.

    python bench/collector/fuzz_pipeline.py --hostile 100000 --out results/collector/fuzz.json

Starts its own mosquitto on a free loopback port, a collector ingest into a fresh SQLite store and an
agent link, all in this process (thread deaths are caught by `threading.excepthook`). `run()` is what
the test suite calls with smaller numbers.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import signal
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from hostile import ANY_REJECT, VALID, Hostile

from ctxscope.agent.config import AgentConfig
from ctxscope.agent.transport.link import Link
from ctxscope.agent.transport.spool import Spool
from ctxscope.broker import MosquittoBroker
from ctxscope.collector.ingest import Ingest
from ctxscope.collector.store import open_store
from ctxscope.shared.messages import Command

AGENT_DEVICE = "fz-agent"
PUBLISH_WINDOW = 200


def _wait(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


def run(
    broker: MosquittoBroker,
    workdir: Path,
    *,
    seed: int,
    hostile: int,
    agent_messages: int,
    records: int,
    redelivered: int,
    timeout_s: float = 600,
) -> dict[str, Any]:
    """Send everything, wait until the collector and the agent have taken every message, and report
    what was sent (`expected`: labels) next to what each side counted."""
    deaths: list[str] = []
    previous_hook = threading.excepthook
    threading.excepthook = lambda args: deaths.append(f"{args.thread}: {args.exc_type.__name__}")
    gen = Hostile(seed)
    valid = gen.records(records)
    rng = random.Random(seed)
    to_collector = [*valid, *rng.sample(valid, redelivered), *gen.collector_cases(hostile, oversized=True)]
    rng.shuffle(to_collector)
    to_agent = list(gen.agent_cases(AGENT_DEVICE, agent_messages, time.time_ns()))

    store = open_store(f"sqlite:///{workdir / 'fuzz.db'}")
    ingest = Ingest(store, broker.host, broker.port, client_id="fuzz_collector")
    config = AgentConfig(device=AGENT_DEVICE, broker_port=broker.port, spool_path=workdir / "spool.sqlite")
    link = Link(config, Spool(config.resolved_spool_path(), AGENT_DEVICE))
    handled: list[Command] = []
    link.on_command(handled.append)
    publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    publisher.max_inflight_messages_set(PUBLISH_WINDOW)
    cpu_before = time.process_time()
    ingest.start()
    link.start()
    try:
        if not (ingest.wait_connected(10) and link.wait_connected(10)):
            raise TimeoutError("the collector or the agent did not connect")
        time.sleep(0.2)  # the agent subscribes to its commands right after connecting
        publisher.connect(broker.host, broker.port)
        publisher.loop_start()
        started = time.monotonic()
        # paho's own queue of unacknowledged publishes slows down as it grows: keep it short
        pending: deque[mqtt.MQTTMessageInfo] = deque()
        for case in [*to_agent, *to_collector]:
            pending.append(publisher.publish(case.topic, case.payload, qos=1))
            if len(pending) > PUBLISH_WINDOW:
                pending.popleft().wait_for_publish(30)
        # besides the fuzz, the collector receives the agent's own birth (status and meta)
        taken = lambda: (c := ingest.counters()).received - c.state_applied - c.state_stale  # noqa: E731
        agent_seen = lambda: len(handled) + sum(link.rejected().values())  # noqa: E731
        _wait(lambda: agent_seen() >= len(to_agent), timeout_s, "the agent to take every message")
        # and the agent's acks of the commands it refused, which it sends to the collector
        acks = sum(n for r, n in link.rejected().items() if r.startswith("refused_"))
        _wait(lambda: taken() >= len(to_collector) + acks, timeout_s, "the collector to take every message")
        elapsed = time.monotonic() - started
        counters = ingest.counters()
        stored_rejects: Counter[str] = Counter()
        for row in store.reject_counts():
            stored_rejects[row["reason"]] += row["count"]
        exactly_once = (
            all(
                store.record_seqs(device, stream) == list(range(1, gen._seq[device] + 1))
                for device, stream in gen._stream.items()
            )
            and store.record_count() - store.record_count(AGENT_DEVICE) == records
        )
        # the agent answers each refused command with a CommandAck record, which reaches the store too
        agent_acks = store.record_count(AGENT_DEVICE)
        return {
            "seed": seed,
            "messages": len(to_collector) + len(to_agent),
            "collector": {
                "sent": len(to_collector),
                "expected": dict(Counter(c.expect for c in to_collector)),
                "received": taken(),
                "stored": counters.stored - agent_acks,
                "agent_acks_stored": agent_acks,
                "duplicates": counters.duplicates,
                "rejected": dict(counters.rejected),
                "rejects_in_store": dict(stored_rejects),
                "store_errors": counters.store_errors,
                "records_in_store": store.record_count() - agent_acks,
                "exactly_once": exactly_once,
                "connected_after": ingest.connected,
                "writer_alive_after": ingest._writer.is_alive(),
            },
            "agent": {
                "sent": len(to_agent),
                "expected": dict(Counter(c.expect for c in to_agent)),
                "commands_handled": len(handled),
                "distinct_commands_handled": len({c.command_id for c in handled}),
                "rejected": dict(link.rejected()),
                "connected_after": link.connected,
            },
            "thread_deaths": deaths,
            "elapsed_s": round(elapsed, 2),
            "messages_per_s": round((len(to_collector) + len(to_agent)) / elapsed),
            "cpu_s": round(time.process_time() - cpu_before, 1),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
    finally:
        threading.excepthook = previous_hook
        publisher.loop_stop()
        publisher.disconnect()
        link.close(5)
        ingest.stop()
        store.close()


def check(report: dict[str, Any]) -> list[str]:
    """What the report shows wrong, if anything (empty: 0 deaths, exactly once, rejects as labelled)."""
    problems = []
    collector, agent = report["collector"], report["agent"]
    expected = collector["expected"]
    if report["thread_deaths"]:
        problems.append(f"threads died: {report['thread_deaths']}")
    sent_valid = expected.get(VALID, 0)  # the records plus those sent twice
    if not collector["exactly_once"] or collector["stored"] + collector["duplicates"] != sent_valid:
        problems.append("valid records were not stored exactly once")
    named = {r: n for r, n in expected.items() if r not in (VALID, ANY_REJECT)}
    for reason, n in named.items():
        if collector["rejected"].get(reason, 0) < n:
            problems.append(f"collector: {n} {reason} sent, {collector['rejected'].get(reason, 0)} counted")
    if sum(collector["rejected"].values()) != sum(named.values()) + expected.get(ANY_REJECT, 0):
        problems.append("collector: rejects do not add up to the hostile messages sent")
    if collector["rejected"] != collector["rejects_in_store"]:
        problems.append("collector: rejects counted and rejects in the store differ")
    if agent["commands_handled"] != agent["expected"].get(VALID, 0) or (
        agent["distinct_commands_handled"] != agent["commands_handled"]
    ):
        problems.append("agent: live commands were not handed over exactly once")
    for reason, n in agent["expected"].items():
        if reason not in (VALID, ANY_REJECT) and agent["rejected"].get(reason, 0) < n:
            problems.append(f"agent: {n} {reason} sent, {agent['rejected'].get(reason, 0)} counted")
    refused = sum(n for r, n in agent["rejected"].items() if r.startswith("refused_"))
    if collector["agent_acks_stored"] != refused:
        problems.append("agent: not every refused command's ack reached the store")
    if not (collector["connected_after"] and collector["writer_alive_after"] and agent["connected_after"]):
        problems.append("the collector or the agent is not alive and connected afterwards")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hostile", type=int, default=100_000, help="hostile messages to the collector")
    parser.add_argument("--agent-messages", type=int, default=10_000, help="messages to the agent's commands")
    parser.add_argument("--records", type=int, default=5_000, help="valid records")
    parser.add_argument("--redelivered", type=int, default=500, help="valid records sent a second time")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--out", type=Path, help="write the report as JSON here")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the broker is stopped too
    with tempfile.TemporaryDirectory(prefix="ctxscope-fuzz-") as tmp:
        broker = MosquittoBroker(Path(tmp) / "broker")
        broker.start()
        try:
            report = run(
                broker, Path(tmp), seed=args.seed, hostile=args.hostile, agent_messages=args.agent_messages,
                records=args.records, redelivered=args.redelivered,
            )  # fmt: skip
        finally:
            broker.stop()
    report["command"] = "python bench/collector/" + Path(__file__).name + " " + " ".join(sys.argv[1:])
    report["problems"] = check(report)
    text = json.dumps(report, indent=2, sort_keys=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
