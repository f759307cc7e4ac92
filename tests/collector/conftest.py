"""Fixtures of the collector web/aggregation tests: result records built from the real schemas."""

from __future__ import annotations

import http.cookiejar
import itertools
import json
import re
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from ctxscope.broker import MosquittoBroker, mosquitto_binary
from ctxscope.collector.store import Accepted, open_store
from ctxscope.collector.store.base import Store
from ctxscope.collector.web.app import create_app
from ctxscope.collector.web.hub import LiveHub
from ctxscope.collector.web.server import Dashboard, WebServer
from ctxscope.shared.messages import CHANNEL_OF_KIND, Message, Metric, PointResult
from ctxscope.shared.topics import topic_for
from tests.bench_scripts import load_bench

_seq = itertools.count(1)


def make_result(
    *,
    device: str = "orin-1",
    model: str = "qwen2.5-0.5b",
    family: str = "transformer",
    context_len: int = 1024,
    precision: str = "bf16",
    outcome: str = "ok",
    run_id: str = "run-a",
    metrics: dict[str, tuple[str, Sequence[float]]] | None = None,
    implementation: dict[str, str] | None = None,
    details: dict[str, Any] | None = None,
) -> PointResult:
    """A PointResult; `metrics` maps name -> (unit, samples)."""
    return PointResult(
        device=device,
        stream="0123456789abcdef",
        seq=next(_seq),
        ts=time.time_ns(),
        run_id=run_id,
        point_id=f"{model}-{context_len}-{precision}",
        model=model,
        family=family,
        context_len=context_len,
        precision=precision,
        outcome=outcome,
        metrics={
            name: Metric(unit=unit, method="test: cuda events", samples=list(samples))
            for name, (unit, samples) in (metrics or {}).items()
        },
        implementation=implementation or {"attention": "sdpa"},
        details=details or {},
    )


@pytest.fixture
def result_factory() -> Callable[..., PointResult]:
    return make_result


# ----------------------------------------------------------------------------------------------
# A real store, a live hub and the app served by uvicorn on a free loopback port.


def load_simfleet() -> Any:
    """The benchmark's simulated devices (bench/collector/simfleet.py), shared with these tests."""
    return load_bench("collector/simfleet.py")


@pytest.fixture(scope="session")
def simfleet() -> Any:
    return load_simfleet()


def feed(store: Store, hub: LiveHub | None, messages: Sequence[Message]) -> None:
    """Store messages as ingest would (one transaction) and raise the after-commit callback."""
    outcome = store.write_batch([Accepted(topic_for(m.device, CHANNEL_OF_KIND[m.kind]), m) for m in messages])
    if hub is not None:
        hub.on_commit(outcome)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'collector.db'}")
    yield s
    s.close()


@pytest.fixture
def hub() -> LiveHub:
    return LiveHub()


@pytest.fixture
def served(store: Store, hub: LiveHub) -> Iterator[WebServer]:
    server = WebServer(create_app(store, hub)).start()
    yield server
    server.stop()


@pytest.fixture
def feeder(store: Store, hub: LiveHub) -> Callable[[Sequence[Message]], None]:
    """Store messages as ingest would and raise the hub's after-commit callback."""
    return lambda messages: feed(store, hub, messages)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    """A private mosquitto on a free loopback port, shared by this folder's tests."""
    if mosquitto_binary() is None:
        pytest.skip("mosquitto is not installed")
    b = MosquittoBroker(tmp_path_factory.mktemp("mosquitto"))
    b.start()
    yield b
    b.stop()


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[Store]:
    """A PostgreSQL store in a fresh schema (see tests/conftest.py), closed afterwards."""
    s = open_store(pg_url)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def feed_store() -> Callable[[Store, Sequence[Message]], None]:
    """Store messages into any store as ingest would (no live hub)."""
    return lambda target, messages: feed(target, None, messages)


@pytest.fixture
def dashboard(broker: MosquittoBroker, tmp_path: Path) -> Iterator[Dashboard]:
    """Ingest + store + command publisher + web server on the session's private broker."""
    d = Dashboard(
        f"{broker.host}:{broker.port}",
        f"sqlite:///{tmp_path / 'c.db'}",
        client_id=f"web_{secrets.token_hex(4)}",
    ).start()
    assert d.service.ingest.wait_connected(10)
    yield d
    d.stop()


# ----------------------------------------------------------------------------------------------
# A client that holds the dashboard's session cookie and sends its CSRF token, as the pages do.


class WebClient:
    """urllib with a cookie jar: `page()` opens a page (and its session), `post_json()` sends the
    page's CSRF token in X-CSRF-Token; `headers` go with every request (Host, Origin...)."""

    def __init__(self, base_url: str, headers: dict[str, str] | None = None) -> None:
        self.base_url = base_url
        self.headers = headers or {}
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )
        self.csrf = ""

    def request(
        self, path: str, data: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], str]:
        request = urllib.request.Request(
            self.base_url + path, data=data, headers={**self.headers, **(headers or {})}
        )
        try:
            with self.opener.open(request, timeout=10) as response:
                return response.status, dict(response.headers), response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read().decode()

    def page(self, path: str = "/") -> tuple[int, str]:
        status, _, body = self.request(path, headers={"accept": "text/html"})
        self._take_csrf(body)
        return status, body

    def _take_csrf(self, body: str) -> None:
        found = re.search(r'<meta name="csrf-token" content="([^"]+)">', body) or re.search(
            r'name="csrf_token" value="([^"]+)"', body
        )
        if found:
            self.csrf = found.group(1)

    def post_json(
        self, path: str, body: dict[str, Any], csrf: str | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        token = self.csrf if csrf is None else csrf
        status, _, answer = self.request(
            path,
            json.dumps(body).encode(),
            {"content-type": "application/json", "x-csrf-token": token, **(headers or {})},
        )
        return status, json.loads(answer)

    def login(self, user: str, password: str) -> tuple[int, str]:
        self.page("/login")
        form = urllib.parse.urlencode(
            {"username": user, "password": password, "csrf_token": self.csrf, "next": "/"}
        )
        status, _, body = self.request(
            "/login",
            form.encode(),
            {"content-type": "application/x-www-form-urlencoded", "accept": "text/html"},
        )
        self._take_csrf(body)  # the page it redirects to: a login gives its session a new token
        return status, body


@pytest.fixture
def web_client() -> Callable[..., WebClient]:
    return WebClient
