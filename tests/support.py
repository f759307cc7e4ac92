"""What the tests of records in flight share: a store on both backends, a private broker and a client
publishing to it, message builders and a wait. `tests/conftest.py` registers the fixtures for every
folder; `tests/collector/` swaps in its SQLite `store`, and `tests/collector/store/` takes both backends
back."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from ctxscope.broker import MosquittoBroker, mosquitto_binary
from ctxscope.collector.store import Store, open_store
from ctxscope.shared.messages import Metric, PointResult


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store URL on each backend: a new SQLite file, and a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'collector.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    opened = open_store(store_url)
    yield opened
    opened.close()


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A private mosquitto on a free loopback port (never the shared one on 1883)."""
    if mosquitto_binary() is None:
        pytest.skip("mosquitto is not installed")
    broker = MosquittoBroker(tmp_path / "broker")
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def publisher(mosquitto: MosquittoBroker) -> Iterator[mqtt.Client]:
    """A plain MQTT client connected to the private broker, its network loop running."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    yield client
    client.loop_stop()
    client.disconnect()


def result_fields(i: int, run_id: str = "run-1") -> dict[str, Any]:
    return {
        "run_id": run_id,
        "point_id": f"p{i}",
        "model": "qwen2.5-0.5b",
        "family": "transformer",
        "context_len": 1024 * (i + 1),
        "precision": "bf16",
        "outcome": "ok",
        "metrics": {
            "ttft": Metric(unit="s", method="cuda events, median of reps", samples=[0.1, 0.11, 0.12])
        },
        "implementation": {"attention": "sdpa"},
    }


def point_result(device: str, stream: str, seq: int) -> PointResult:
    return PointResult(
        device=device, stream=stream, seq=seq, ts=1_700_000_000_000_000_000 + seq, **result_fields(seq)
    )


def wait_for(predicate: Callable[[], object], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


def assert_method_matches_windows(method: str, loop: dict[str, Any], one: str, many: str) -> None:
    """A timed metric's method says what one sample is, as its loop's windows held it: `one` when each
    window ran the phase once, else "mean of k back-to-back <many>" naming every window's k."""
    counts = sorted({w["repetitions"] for w in loop["windows"]})
    if counts == [1]:
        assert one in method and "back-to-back" not in method, method
    else:
        found = re.search(rf"mean of ([\d/]+) back-to-back {many}", method)
        assert found is not None, method
        assert [int(k) for k in found.group(1).split("/")] == counts, (method, counts)
