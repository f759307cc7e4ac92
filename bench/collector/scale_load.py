"""The load of a scale run, in its own process: N simulated devices over a few MQTT connections.

Each device sends meta and status once, then one telemetry batch a tick (10 samples of power and
temperature; a tick is 1 s unless `--tick-s` says otherwise) and a point result every tenth tick,
phases spread over the tick (in slots of 10 ms: a thread wakes once per slot and publishes the
devices due in it, each stamped when it is published). The envelope's `ts` is the publish time, so
the collector's stored time minus `ts` is the record's ingest lag. The devices share `connections`
MQTT clients (the private broker has no ACL), so that the generator, not one thread per device, is
what it costs. Runs until SIGTERM, then waits (at most 60 s) for the broker's PUBACK of everything it
published and prints `PUBLISHED <data records> UNACKED <messages the broker did not acknowledge>`;
`--sent FILE` writes each device's stream and newest seq (JSON), for an exactly-once check against
the store.

    python bench/collector/scale_load.py HOST PORT DEVICES CONNECTIONS [--tick-s S] [--sent FILE]
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from simfleet import SimDevice

from ctxscope.shared import codec
from ctxscope.shared.messages import CHANNEL_OF_KIND, Message
from ctxscope.shared.topics import topic_for

RESULT_EVERY = 10  # ticks between a device's point results
SLOT_S = 0.01  # a device publishes at most this late after its phase in the tick
ACK_WAIT_S = 60.0


@dataclass
class Tally:
    """One connection's counts: data records published; every message published and acknowledged."""

    data: int = 0
    sent: int = 0
    acked: int = 0


def publish(client: mqtt.Client, message: Message, tally: Tally) -> None:
    tally.sent += 1
    client.publish(topic_for(message.device, CHANNEL_OF_KIND[message.kind]), codec.encode(message), qos=1)


def run_connection(
    index: int,
    devices: list[SimDevice],
    host: str,
    port: int,
    tick_s: float,
    stop: threading.Event,
    tally: Tally,
) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"scale-load-{index}")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)

    def on_publish(*_: Any) -> None:
        tally.acked += 1

    client.on_publish = on_publish
    client.connect(host, port, keepalive=60)
    client.loop_start()
    for dev in devices:
        publish(client, dev.meta(), tally)
        publish(client, dev.status("busy", run_id="scale"), tally)
    tick = 0
    start = time.monotonic()
    while not stop.is_set():
        for i, dev in enumerate(devices):
            # device i of this connection publishes at offset i/len within each tick; the devices due
            # within one slot go together (one wake-up per slot, not one per message)
            due = start + (tick + i / len(devices)) * tick_s
            delay = due - time.monotonic()
            if delay > 0 and stop.wait(delay + SLOT_S):
                break
            publish(client, dev.telemetry(power_w=10 + tick % 20, temp_c=40 + tick % 10), tally)
            tally.data += 1
            if (tick + i) % RESULT_EVERY == 0:
                n = 1024 * (1 + tick % 16)
                result = dev.result("scale", "qwen2.5-0.5b", "transformer", n, 0.01 * n, 1000 + 0.3 * n)
                publish(client, result, tally)
                tally.data += 1
        tick += 1
    deadline = time.monotonic() + ACK_WAIT_S
    while tally.acked < tally.sent and time.monotonic() < deadline:
        time.sleep(0.1)
    client.disconnect()
    client.loop_stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("devices", type=int)
    parser.add_argument("connections", type=int)
    parser.add_argument(
        "--tick-s", type=float, default=1.0, help="seconds between a device's telemetry batches"
    )
    parser.add_argument("--sent", type=Path, default=None, help="write {device: [stream, newest seq]} here")
    args = parser.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    fleet = [SimDevice(f"sim-{i:05d}") for i in range(args.devices)]
    tallies = [Tally() for _ in range(args.connections)]
    threads = [
        threading.Thread(
            target=run_connection,
            args=(c, fleet[c :: args.connections], args.host, args.port, args.tick_s, stop, tallies[c]),
            daemon=True,
        )
        for c in range(args.connections)
    ]
    for t in threads:
        t.start()
    stop.wait()
    for t in threads:
        t.join(ACK_WAIT_S + 10)
    if args.sent is not None:
        args.sent.write_text(json.dumps({d.device: [d.stream, d.last_seq] for d in fleet}))
    unacked = sum(t.sent - t.acked for t in tallies)
    print("PUBLISHED", sum(t.data for t in tallies), "UNACKED", unacked, flush=True)


if __name__ == "__main__":
    main()
