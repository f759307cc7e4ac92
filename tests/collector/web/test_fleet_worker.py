"""The fleet view answered by a worker process over the same store, and a dead worker replaced."""

from __future__ import annotations

import json
import os
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ctxscope.collector.readmodel import views
from ctxscope.collector.store import Store, open_store
from ctxscope.collector.web.app import create_app
from ctxscope.collector.web.fleet_worker import FleetWorker, answer_json
from ctxscope.collector.web.hub import LiveHub
from ctxscope.collector.web.server import WebServer
from tests.collector.conftest import feed


def comparable(view: dict[str, Any]) -> dict[str, Any]:
    """A fleet answer without what depends on when it was computed."""
    devices = [{k: v for k, v in d.items() if k != "last_seen_age_s"} for d in view["devices"]]
    return {k: v for k, v in view.items() if k != "generated_ns"} | {"devices": devices}


@pytest.fixture
def fleet_store(tmp_path: Path, simfleet: Any) -> Iterator[tuple[str, Store]]:
    url = f"sqlite:///{tmp_path / 'collector.db'}"
    store = open_store(url)
    devices = [simfleet.SimDevice(f"dev-{i}") for i in range(3)]
    feed(store, None, [m for d in devices for m in (d.meta(), d.status("busy", run_id="w"))])
    feed(store, None, [d.telemetry(power_w=10.0 + i, temp_c=40.0) for i, d in enumerate(devices)])
    yield url, store
    store.close()


@pytest.fixture
def worker(fleet_store: tuple[str, Store]) -> Iterator[FleetWorker]:
    started = FleetWorker(fleet_store[0]).start()
    yield started
    started.stop()


def test_the_worker_answers_as_the_collector_would(
    fleet_store: tuple[str, Store], worker: FleetWorker
) -> None:
    store = fleet_store[1]
    answer = json.loads(worker.fleet_json())
    assert [d["device"] for d in answer["devices"]] == ["dev-0", "dev-1", "dev-2"]
    assert answer["devices"][2]["telemetry"]["power_w"] == 12.0
    assert comparable(answer) == comparable(json.loads(json.dumps(views.fleet(store))))
    named = json.loads(worker.fleet_json(["dev-2", "no-such-device"]))
    assert [d["device"] for d in named["devices"]] == ["dev-2"]


def test_a_killed_worker_is_replaced_at_the_next_request(worker: FleetWorker) -> None:
    first = worker.pid()
    assert first != os.getpid()
    os.kill(first, signal.SIGKILL)
    answer = json.loads(worker.fleet_json())
    assert len(answer["devices"]) == 3
    assert worker.pid() != first


def test_a_stopped_worker_answers_nothing(fleet_store: tuple[str, Store]) -> None:
    worker = FleetWorker(fleet_store[0])
    with pytest.raises(RuntimeError, match="not started"):
        worker.fleet_json()


def test_the_dashboard_relays_the_workers_answer_with_ingest_health(
    fleet_store: tuple[str, Store], worker: FleetWorker
) -> None:
    health = {"connected": True}
    app = create_app(fleet_store[1], LiveHub(), ingest_health=lambda: health, fleet_answers=worker.fleet_json)
    server = WebServer(app).start()
    try:
        with urllib.request.urlopen(server.url + "/api/fleet?devices=dev-1") as reply:
            assert reply.headers["content-type"] == "application/json"
            answer = json.loads(reply.read())
    finally:
        server.stop()
    assert answer["ingest"] == {"connected": True}
    assert [d["device"] for d in answer["devices"]] == ["dev-1"]


def test_answers_write_a_non_finite_number_as_null() -> None:
    """As FastAPI writes answers: a browser's JSON.parse refuses NaN."""
    assert json.loads(answer_json({"a": float("nan"), "b": float("inf"), "c": 1.5})) == {
        "a": None,
        "b": None,
        "c": 1.5,
    }
