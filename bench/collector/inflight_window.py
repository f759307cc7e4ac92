"""Check: how many QoS 1 messages the broker hands the collector before it acknowledges them.

The collector acknowledges a message only after the batch holding it is committed (manual ack), so
the broker's in-flight window bounds how many messages one commit can hold. This starts a private
mosquitto with the product's settings for a local broker (`ctxscope.broker.MosquittoBroker`: its
`max_inflight_messages` left at the default, 20), subscribes like the collector (MQTT 3.1.1,
persistent session, QoS 1, manual ack), publishes `--messages` at QoS 1, and counts what arrives:
before any acknowledgement, then after each of a few small rounds of acknowledgements.

    python bench/collector/inflight_window.py --messages 2000 --out inflight.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from ctxscope.broker import MosquittoBroker

SETTLE_S = 1.5  # long enough for a local broker to send whatever its window allows


class Subscriber:
    """A collector-like client that holds every message un-acknowledged until told."""

    def __init__(self, broker: MosquittoBroker) -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id="bench_inflight",
            protocol=mqtt.MQTTv311,
            clean_session=False,
            manual_ack=True,
        )
        subscribed = threading.Event()
        self.client.on_message = lambda _c, _u, message: self._keep(message)
        self.client.on_connect = lambda client, *_: client.subscribe("bench/#", 1)
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        if not subscribed.wait(10):
            raise RuntimeError("the broker did not grant the subscription")

    def _keep(self, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(message)

    def received(self) -> int:
        with self._lock:
            return len(self.messages)

    def ack(self, start: int, count: int) -> None:
        with self._lock:
            chosen = self.messages[start : start + count]
        for message in chosen:
            self.client.ack(message.mid, message.qos)


def publish(broker: MosquittoBroker, count: int) -> None:
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id="bench_inflight_pub", protocol=mqtt.MQTTv311
    )
    client.max_inflight_messages_set(count)
    client.max_queued_messages_set(0)
    client.connect(broker.host, broker.port)
    client.loop_start()
    infos = [client.publish("bench/t", b"x" * 100, qos=1) for _ in range(count)]
    for info in infos:
        info.wait_for_publish(10)
    client.loop_stop()
    client.disconnect()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", default="1,1,10,10", help="acknowledgements per round, comma-separated")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        broker = MosquittoBroker(Path(work) / "broker")
        broker.start()
        try:
            subscriber = Subscriber(broker)
            publish(broker, args.messages)
            time.sleep(SETTLE_S)
            rows: list[dict[str, Any]] = [{"acknowledged": 0, "received": subscriber.received()}]
            acknowledged = 0
            for count in (int(c) for c in args.rounds.split(",")):
                subscriber.ack(acknowledged, count)
                acknowledged += count
                time.sleep(SETTLE_S)
                rows.append({"acknowledged": acknowledged, "received": subscriber.received()})
            subscriber.client.loop_stop()
        finally:
            broker.stop()
        assert broker.binary is not None
        version = subprocess.run([broker.binary, "-h"], capture_output=True, text=True).stdout.splitlines()[0]
    report = {
        "command": "python bench/collector/inflight_window.py"
        f" --messages {args.messages} --rounds {args.rounds}",
        "broker": version,
        "max_inflight_messages": "mosquitto's default (20): the local broker's configuration does not set it",
        "rows": rows,
    }
    for row in rows:
        print(
            f"acknowledged {row['acknowledged']:>4}: received {row['received']:>5}, "
            f"un-acknowledged {row['received'] - row['acknowledged']:>5}"
        )
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
