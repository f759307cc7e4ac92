"""/metrics, /healthz and /readyz of a real collector (mosquitto, ingest, SQLite, uvicorn); the metrics
text is read back with prometheus_client's own parser."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ctxscope.broker import MosquittoBroker
from ctxscope.collector.web.server import Dashboard
from ctxscope.shared import codec
from ctxscope.shared.messages import CHANNEL_OF_KIND, Message
from ctxscope.shared.topics import topic_for


def _get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers.get("content-type", ""), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("content-type", ""), exc.read().decode()


def _samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, ctype, body = _get(url + "/metrics")
    assert status == 200 and ctype.startswith("text/plain"), body
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def _wait(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def dashboard(mosquitto: MosquittoBroker, tmp_path: Path) -> Iterator[Dashboard]:
    # A broker of this test's own: the folder's shared one may hold retained state of other tests'
    # devices, which a new collector session receives and counts.
    broker = mosquitto
    board = Dashboard(
        f"{broker.host}:{broker.port}", f"sqlite:///{tmp_path / 'c.db'}", client_id=f"obs_{time.time_ns()}"
    )
    board.start()
    assert board.service.ingest.wait_connected(10)
    yield board
    board.stop()


def _publish(broker: MosquittoBroker, messages: list[Message], garbage: int) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="obs-publisher")
    client.connect(broker.host, broker.port)
    client.loop_start()
    infos = [
        client.publish(topic_for(m.device, CHANNEL_OF_KIND[m.kind]), codec.encode(m), qos=1) for m in messages
    ]
    infos += [
        client.publish(topic_for("orin-1", CHANNEL_OF_KIND["result"]), b"\xc1", qos=1) for _ in range(garbage)
    ]
    for info in infos:
        info.wait_for_publish(10)
    client.disconnect()
    client.loop_stop()


def test_metrics_health_and_readiness(
    dashboard: Dashboard, mosquitto: MosquittoBroker, simfleet: Any
) -> None:
    broker = mosquitto
    url = dashboard.web.url
    assert _get(url + "/healthz")[0] == 200
    status, _, body = _get(url + "/readyz")
    assert status == 200 and json.loads(body) == {"ready": True, "checks": {"store": "ok", "broker": "ok"}}

    orin, rtx = simfleet.SimDevice("orin-1"), simfleet.SimDevice("rtx-1")
    messages = [
        orin.meta(8 * 2**30),
        orin.status("online", backlog=4, dropped=1500),
        orin.telemetry(power_w=12.5, temp_c=48.0),
        *simfleet.sweep(orin),
        rtx.status("offline"),
    ]
    _publish(broker, messages, garbage=3)
    _wait(lambda: dashboard.service.ingest.counters().received == len(messages) + 3, 20, "ingest")
    records = len(messages) - 3  # meta and the two statuses are device state, not records

    samples = _samples(url)
    assert samples[("ctxscope_collector_ingest_received_total", ())] == len(messages) + 3
    assert samples[("ctxscope_collector_ingest_stored_total", ())] == records
    assert samples[("ctxscope_collector_ingest_duplicates_total", ())] == 0
    assert samples[("ctxscope_collector_ingest_rejected_total", (("reason", "not_msgpack"),))] == 3
    assert samples[("ctxscope_collector_ingest_store_errors_total", ())] == 0
    assert samples[("ctxscope_collector_ingest_backlog_messages", ())] == 0
    assert samples[("ctxscope_collector_broker_connected", ())] == 1
    assert samples[("ctxscope_device_online", (("device", "orin-1"),))] == 1
    assert samples[("ctxscope_device_online", (("device", "rtx-1"),))] == 0
    assert samples[("ctxscope_device_spool_backlog_records", (("device", "orin-1"),))] == 4
    assert samples[("ctxscope_device_spool_dropped_records", (("device", "orin-1"),))] == 1500
    # rtx-1's status said nothing of its spool: no sample, not 0
    assert ("ctxscope_device_spool_dropped_records", (("device", "rtx-1"),)) not in samples
    assert samples[("ctxscope_device_power_watts", (("device", "orin-1"),))] == pytest.approx(12.5)
    assert samples[("ctxscope_device_temperature_celsius", (("device", "orin-1"),))] == pytest.approx(48.0)
    # rtx-1 sent no telemetry: its power is absent, never 0.
    assert ("ctxscope_device_power_watts", (("device", "rtx-1"),)) not in samples
    assert 0 <= samples[("ctxscope_device_last_seen_age_seconds", (("device", "orin-1"),))] < 60

    dashboard.service.ingest.stop()
    status, _, body = _get(url + "/readyz")
    assert status == 503 and json.loads(body)["checks"]["broker"] == "not connected"
    assert _get(url + "/healthz")[0] == 200
