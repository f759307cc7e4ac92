"""A failing store is visible: /api/ingest and /api/fleet say so, and the fleet page shows a banner
(in headless Chromium) that goes away once the store works again."""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from ctxscope.broker import MosquittoBroker
from ctxscope.collector.inbox import Inbox
from ctxscope.collector.ingest import Ingest
from ctxscope.collector.store import open_store
from ctxscope.collector.web.app import create_app
from ctxscope.collector.web.hub import LiveHub
from ctxscope.collector.web.server import WebServer
from ctxscope.shared.codec import encode
from ctxscope.shared.messages import Log
from ctxscope.shared.topics import Channel, topic_for

pytestmark = pytest.mark.slow


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def wait_for(predicate: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.1)


@contextlib.contextmanager
def fleet_banner(url: str) -> Iterator[Any]:
    """The fleet page in headless Chromium, once its ingest banner shows: the banner's locator."""
    playwright_sync = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"], headless=True)
        try:
            page = browser.new_page()
            page.goto(url + "/")
            banner = page.locator("#ingest-banner")
            banner.wait_for(state="visible", timeout=10_000)
            yield banner
        finally:
            browser.close()


@pytest.fixture
def failing(
    broker: MosquittoBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing_store: Any
) -> Iterator[tuple[Any, Ingest, WebServer]]:
    monkeypatch.setattr("ctxscope.collector.ingest.STORE_RETRY_S", 0.2)
    monkeypatch.setattr("ctxscope.collector.ingest.STORE_RETRY_MAX_S", 0.2)
    store = failing_store(tmp_path / "c.db", OSError("read-only file system"))
    ingest = Ingest(store, broker.host, broker.port, client_id="banner_c")
    ingest.start()
    assert ingest.wait_connected(10)
    server = WebServer(create_app(store, LiveHub(), None, ingest.health)).start()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    client.connect(broker.host, broker.port)
    client.loop_start()
    log = Log(device="dev-1", stream="00000000000000aa", seq=1, ts=1, level="info", message="m")
    client.publish(topic_for("dev-1", Channel.LOG), encode(log), qos=1).wait_for_publish(5)
    client.loop_stop()
    client.disconnect()
    try:
        yield store, ingest, server
    finally:
        server.stop()
        ingest.stop()
        store.close()


def test_the_api_says_when_the_store_fails(failing: tuple[Any, Ingest, WebServer]) -> None:
    store, ingest, server = failing
    wait_for(lambda: get_json(server.url + "/api/ingest")["store_failing"], 10)
    health = get_json(server.url + "/api/ingest")
    assert health["available"] and health["store_errors"] >= 1
    assert "read-only file system" in health["store_error"]
    assert get_json(server.url + "/api/fleet")["ingest"]["store_failing"]
    store.healed.set()
    wait_for(lambda: not get_json(server.url + "/api/ingest")["store_failing"], 10)
    assert ingest.counters().stored == 1


@pytest.mark.browser
def test_the_fleet_page_shows_a_banner_while_the_store_fails(
    failing: tuple[Any, Ingest, WebServer],
) -> None:
    store, _ingest, server = failing
    wait_for(lambda: get_json(server.url + "/api/ingest")["store_failing"], 10)
    with fleet_banner(server.url) as banner:
        assert "Ingest paused" in banner.inner_text() and "read-only file system" in banner.inner_text()
        store.healed.set()
        banner.wait_for(state="hidden", timeout=15_000)


@pytest.mark.browser
def test_a_failing_upkeep_pass_shows_in_the_api_and_as_a_banner(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    """Records are stored, but a background pass of the store (here the staging merge) keeps failing:
    /api/ingest and /metrics say so, and the fleet page shows it until the pass succeeds."""
    store = open_store(f"sqlite:///{tmp_path / 'c.db'}")
    ingest = Ingest(store, broker.host, broker.port, client_id="upkeep_c")
    ingest.start()
    server = WebServer(create_app(store, LiveHub(), None, ingest.health, ingest=ingest)).start()
    try:
        store.upkeep.failed("merge", TypeError("a fault of the merge"))
        (fault,) = get_json(server.url + "/api/ingest")["store_upkeep_failing"]
        assert (fault["task"], fault["failures"]) == ("merge", 1) and "a fault of the merge" in fault["error"]
        with urllib.request.urlopen(server.url + "/metrics", timeout=10) as response:
            assert "ctxscope_collector_ingest_store_upkeep_failures_total 1.0" in response.read().decode()
        with fleet_banner(server.url) as banner:
            text = banner.inner_text()
            assert "Store upkeep failing" in text and "merge since" in text and "a fault of the merge" in text
            store.upkeep.succeeded("merge")
            banner.wait_for(state="hidden", timeout=15_000)
    finally:
        server.stop()
        ingest.stop()
        store.close()


@pytest.mark.browser
def test_a_broker_certificate_near_its_end_shows_as_a_banner(broker: MosquittoBroker, tmp_path: Path) -> None:
    """A broker certificate 10 days from its end (as a TLS connection would have presented it): the
    fleet page says when it expires and how to renew it; a renewed one takes the banner away."""
    store = open_store(f"sqlite:///{tmp_path / 'c.db'}")
    ingest = Ingest(store, broker.host, broker.port, client_id="cert_c")
    ingest.start()
    server = WebServer(create_app(store, LiveHub(), None, ingest.health, ingest=ingest)).start()
    day_ns = 86_400 * 10**9
    try:
        ingest.cert_watch.seen(time.time_ns() + 10 * day_ns + day_ns // 2)
        assert get_json(server.url + "/api/ingest")["broker_cert_expiring"]
        with fleet_banner(server.url) as banner:
            text = banner.inner_text()
            assert "TLS certificate expires in 10 days" in text and "ctxscope collector renew-cert" in text
            ingest.cert_watch.seen(time.time_ns() + 825 * day_ns)
            banner.wait_for(state="hidden", timeout=15_000)
    finally:
        server.stop()
        ingest.stop()
        store.close()


@pytest.mark.browser
def test_a_write_blocked_by_a_locked_database_shows_before_it_fails(
    broker: MosquittoBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process holds the SQLite database locked: the write neither commits nor fails for as
    long as SQLite's busy timeout (30 s); the API and the fleet page say that ingest is waiting, and,
    once its inbox is full too, that it reads nothing more from the broker."""
    monkeypatch.setattr("ctxscope.collector.ingest.STORE_STALL_S", 0.5)
    path = tmp_path / "c.db"
    store = open_store(f"sqlite:///{path}")
    ingest = Ingest(store, broker.host, broker.port, client_id="stall_c", inbox=Inbox(max_messages=2))
    ingest.start()
    assert ingest.wait_connected(10)
    server = WebServer(create_app(store, LiveHub(), None, ingest.health, ingest=ingest)).start()
    locker = sqlite3.connect(path, isolation_level=None)
    try:
        assert get_json(server.url + "/api/ingest")["store_stalled_s"] is None
        locker.execute("BEGIN EXCLUSIVE")
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        client.connect(broker.host, broker.port)
        client.loop_start()
        health = lambda: get_json(server.url + "/api/ingest")  # noqa: E731

        def publish(seqs: range) -> None:
            for seq in seqs:
                log = Log(device="dev-1", stream="00000000000000ab", seq=seq, ts=1, level="info", message="m")
                client.publish(topic_for("dev-1", Channel.LOG), encode(log), qos=1).wait_for_publish(5)

        publish(range(1, 2))  # the write it starts blocks
        wait_for(lambda: health()["store_stalled_s"] is not None, 10)
        publish(range(2, 11))  # two fill the inbox, the rest wait in paho's thread
        client.loop_stop()
        client.disconnect()
        wait_for(lambda: health()["inbox_blocked_s"] is not None, 10)
        assert not health()["store_failing"]
        with fleet_banner(server.url) as banner:
            text = banner.inner_text()
            assert "Ingest waiting: one write to the store has taken" in text
            assert "Ingest behind: its inbox has been full for" in text
            locker.execute("ROLLBACK")
            banner.wait_for(state="hidden", timeout=15_000)
        wait_for(lambda: ingest.counters().stored == 10, 10)
        assert health()["inbox_blocked_s"] is None
    finally:
        locker.close()
        server.stop()
        ingest.stop()
        store.close()
