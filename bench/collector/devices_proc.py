"""N simulated devices publishing through the broker, one MQTT connection each (own process).

Each device sends meta + status once, then every `period` seconds a telemetry batch whose extra
channel `probe_publish_s` (float64) holds the wall time of its publish, and every fifth period a
point result with its run progress. Runs until SIGTERM; prints how many records it published.
"""

from __future__ import annotations

import signal
import sys
import threading
import time

import numpy as np
import paho.mqtt.client as mqtt
from simfleet import SimDevice

from ctxscope.shared import codec
from ctxscope.shared.messages import CHANNEL_OF_KIND, Message, TelemetryChannel
from ctxscope.shared.topics import topic_for


def publish(client: mqtt.Client, message: Message) -> None:
    client.publish(topic_for(message.device, CHANNEL_OF_KIND[message.kind]), codec.encode(message), qos=1)


def probe_telemetry(dev: SimDevice, tick: int) -> Message:
    batch = dev.telemetry(power_w=10 + tick % 20, temp_c=40 + tick % 10)
    channels = dict(batch.channels)
    n = len(batch.t_ns) // 8
    stamp = np.full(n, time.time_ns() / 1e9, dtype="<f8")
    channels["probe_publish_s"] = TelemetryChannel(unit="s", dtype="f8", data=stamp.tobytes())
    return batch.model_copy(update={"channels": channels})


def run_device(
    index: int,
    fleet_size: int,
    host: str,
    port: int,
    period_s: float,
    stop: threading.Event,
    counts: list[int],
) -> None:
    dev = SimDevice(f"sim-{index:03d}")
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=dev.device)
    client.max_inflight_messages_set(20)
    client.connect(host, port, keepalive=30)
    client.loop_start()
    publish(client, dev.meta())
    publish(client, dev.status("busy", run_id="bench"))
    publish(client, dev.run_started("bench", 10_000))
    # Spread the devices' phases over the period so load is steady, not synchronized bursts.
    stop.wait(period_s * index / fleet_size)
    tick = 0
    while not stop.is_set():
        publish(client, probe_telemetry(dev, tick))
        counts[index] += 1
        if tick % 5 == 4:
            n = 1024 * (1 + tick % 16)
            publish(client, dev.result("bench", "qwen2.5-0.5b", "transformer", n, 0.01 * n, 1000 + 0.3 * n))
            publish(client, dev.progress("bench", tick // 5 + 1, 10_000))
            counts[index] += 2
        tick += 1
        stop.wait(period_s)
    client.disconnect()
    client.loop_stop()


def main(host: str, port: int, n: int, period_s: float) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    counts = [0] * n
    threads = [
        threading.Thread(target=run_device, args=(i, n, host, port, period_s, stop, counts), daemon=True)
        for i in range(n)
    ]
    for t in threads:
        t.start()
    stop.wait()
    for t in threads:
        t.join(5)
    print("PUBLISHED", sum(counts), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
