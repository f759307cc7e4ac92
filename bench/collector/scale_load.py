"""The load of a scale run, in its own process: N simulated devices over a few MQTT connections.

Each device sends meta and status once, then one telemetry batch a second (10 samples of power and
temperature) and a point result every tenth second, phases spread over the second. The envelope's
`ts` is the publish time, so the collector's stored time minus `ts` is the record's ingest lag. The
devices share `connections` MQTT clients (the private broker has no ACL), so that the generator,
not one thread per device, is what it costs. Runs until SIGTERM; prints `PUBLISHED <n>`.

    python bench/collector/scale_load.py HOST PORT DEVICES CONNECTIONS
"""

from __future__ import annotations

import signal
import sys
import threading
import time

import paho.mqtt.client as mqtt
from simfleet import SimDevice

from ctxscope.shared import codec
from ctxscope.shared.messages import CHANNEL_OF_KIND, Message
from ctxscope.shared.topics import topic_for

RESULT_EVERY = 10  # ticks (seconds) between a device's point results


def publish(client: mqtt.Client, message: Message) -> None:
    client.publish(topic_for(message.device, CHANNEL_OF_KIND[message.kind]), codec.encode(message), qos=1)


def run_connection(
    index: int, devices: list[SimDevice], host: str, port: int, stop: threading.Event, counts: list[int]
) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"scale-load-{index}")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect(host, port, keepalive=60)
    client.loop_start()
    for dev in devices:
        publish(client, dev.meta())
        publish(client, dev.status("busy", run_id="scale"))
    tick = 0
    start = time.monotonic()
    while not stop.is_set():
        for i, dev in enumerate(devices):
            # device i of this connection publishes at offset i/len within each second
            due = start + tick + i / len(devices)
            delay = due - time.monotonic()
            if delay > 0 and stop.wait(delay):
                break
            publish(client, dev.telemetry(power_w=10 + tick % 20, temp_c=40 + tick % 10))
            counts[index] += 1
            if (tick + i) % RESULT_EVERY == 0:
                n = 1024 * (1 + tick % 16)
                result = dev.result("scale", "qwen2.5-0.5b", "transformer", n, 0.01 * n, 1000 + 0.3 * n)
                publish(client, result)
                counts[index] += 1
        tick += 1
    client.disconnect()
    client.loop_stop()


def main(host: str, port: int, n: int, connections: int) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    fleet = [SimDevice(f"sim-{i:05d}") for i in range(n)]
    counts = [0] * connections
    threads = [
        threading.Thread(
            target=run_connection,
            args=(c, fleet[c::connections], host, port, stop, counts),
            daemon=True,
        )
        for c in range(connections)
    ]
    for t in threads:
        t.start()
    stop.wait()
    for t in threads:
        t.join(10)
    print("PUBLISHED", sum(counts), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
