"""The dashboard safe to expose: Host/Origin allow-list (DNS rebinding), CSRF, login and its limits,
the event stream's end with its session, headers, bind.

Served by uvicorn over a real SQLite store; plans go to a real mosquitto, where a subscriber on the
device's command topic sees what was (or was not) sent.
"""

from __future__ import annotations

import http.client
import os
import stat
import threading
import time
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from click.testing import CliRunner

from ctxscope.collector.commands import CommandPublisher
from ctxscope.collector.run import run
from ctxscope.collector.web import app as app_module
from ctxscope.collector.web import security as security_module
from ctxscope.collector.web.app import create_app
from ctxscope.collector.web.auth import Credentials, CredentialsError, passwd, verify_password
from ctxscope.collector.web.login_gate import LoginGate
from ctxscope.collector.web.security import (
    COOKIE,
    Session,
    Sessions,
    WebSecurity,
    allowed_hosts_for,
    check_bind,
    host_of,
)
from ctxscope.collector.web.server import Dashboard, WebServer
from ctxscope.shared.topics import Channel, subscription
from tests.collector.web.conftest import PASSWORD

PLAN = 'name = "smoke"\nmodels = ["qwen2.5-0.5b"]\ncontext_lengths = [32]\n'
FORM = {"content-type": "application/x-www-form-urlencoded", "accept": "text/html"}


class CommandWatcher:
    """Counts the messages published on a device's command topics."""

    def __init__(self, broker: Any, device: str) -> None:
        self.count = 0
        ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"watch-{device}")
        self.client.on_connect = lambda c, *_: (
            c.subscribe(subscription(Channel.CMD, device), qos=1),
            ready.set(),
        )
        self.client.on_message = lambda *_: self._seen()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert ready.wait(5)
        time.sleep(0.2)  # let the SUBACK land

    def _seen(self) -> None:
        self.count += 1

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def plan_server(broker, store, hub, simfleet, feeder) -> Iterator[tuple[WebServer, CommandWatcher]]:
    feeder([simfleet.SimDevice("orin-1").meta()])
    publisher = CommandPublisher(broker.host, broker.port)
    server = WebServer(create_app(store, hub, publisher)).start()
    watcher = CommandWatcher(broker, "orin-1")
    yield server, watcher
    watcher.close()
    server.stop()
    publisher.close()


def test_dns_rebinding_and_foreign_origins_cannot_send_a_plan(plan_server, web_client):
    server, watcher = plan_server
    # A rebinding page: the attacker's name resolves to loopback, so the browser sends its own Host
    # and Origin, with a CSRF token it could only have read through the same rebinding.
    client = web_client(server.url)
    client.page("/devices/orin-1")
    rebound = f"attacker.example:{server.port}"
    status, _, _ = client.request("/devices/orin-1", headers={"host": rebound})
    assert status == 400
    status, answer = client.post_json(
        "/api/devices/orin-1/plans",
        {"plan_toml": PLAN},
        headers={"host": rebound, "origin": f"http://{rebound}"},
    )
    assert status == 400 and answer["detail"] == "unknown Host"
    # The right Host but a foreign Origin (a page elsewhere posting to us), and a cross-site fetch.
    for headers in (
        {"origin": "http://attacker.example"},
        {"origin": "null"},
        {"sec-fetch-site": "cross-site"},
    ):
        status, answer = client.post_json("/api/devices/orin-1/plans", {"plan_toml": PLAN}, headers=headers)
        assert status == 403, (headers, answer)
    time.sleep(1.0)
    assert watcher.count == 0
    # The same request from the dashboard's own origin goes out.
    status, answer = client.post_json(
        "/api/devices/orin-1/plans", {"plan_toml": PLAN}, headers={"origin": server.url}
    )
    assert status == 202, answer
    deadline = time.monotonic() + 5
    while watcher.count == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert watcher.count == 1


def test_a_plan_needs_the_csrf_token_of_its_own_session(plan_server, web_client):
    server, watcher = plan_server
    mine, other = web_client(server.url), web_client(server.url)
    mine.page("/devices/orin-1")
    other.page("/")
    assert mine.csrf and other.csrf and mine.csrf != other.csrf
    for token in ("", "forged", other.csrf):
        status, answer = mine.post_json("/api/devices/orin-1/plans", {"plan_toml": PLAN}, csrf=token)
        assert status == 403 and "CSRF" in answer["detail"]
    cookieless = web_client(server.url)
    status, _ = cookieless.post_json("/api/devices/orin-1/plans", {"plan_toml": PLAN}, csrf=mine.csrf)
    assert status == 403
    time.sleep(1.0)
    assert watcher.count == 0
    assert mine.post_json("/api/devices/orin-1/plans", {"plan_toml": PLAN})[0] == 202


def test_every_answer_carries_the_security_headers(served, web_client):
    client = web_client(served.url)
    for path in ("/", "/api/fleet", "/static/app.js", "/static/plotly.min.js", "/no-such-page"):
        _, headers, _ = client.request(path)
        lower = {k.lower(): v for k, v in headers.items()}
        csp = lower["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-eval" not in csp
        assert lower["x-content-type-options"] == "nosniff"
        assert lower["x-frame-options"] == "DENY"
        assert lower["referrer-policy"] == "same-origin"


def test_the_session_cookie_is_httponly_and_samesite_strict(served, web_client):
    _, headers, _ = web_client(served.url).request("/", headers={"accept": "text/html"})
    cookie = headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Secure" not in cookie  # plain HTTP on loopback; --web-secure-cookie or TLS sets it


def test_passwd_writes_a_private_file_of_scrypt_hashes(credentials_file: Path, monkeypatch):
    assert stat.S_IMODE(os.stat(credentials_file).st_mode) == 0o600
    user, encoded = credentials_file.read_text().strip().split(":", 1)
    assert user == "alice" and encoded.startswith("scrypt$") and PASSWORD not in encoded
    assert verify_password(PASSWORD, encoded) and not verify_password(PASSWORD + "!", encoded)
    monkeypatch.setenv("CTXSCOPE_TEST_PASSWORD", "short")
    refused = CliRunner().invoke(
        passwd, [str(credentials_file), "bob", "--password-env", "CTXSCOPE_TEST_PASSWORD"]
    )
    assert refused.exit_code == 1 and "at least 12 characters" in refused.output
    credentials_file.write_text("alice:plaintext\n")
    with pytest.raises(CredentialsError, match="line 1"):
        Credentials.load(credentials_file)


async def _refused(*args: Any) -> None:
    return None


def test_with_credentials_everything_but_the_login_page_needs_a_login(
    store, hub, credentials_file, web_client, monkeypatch
):
    security = WebSecurity(credentials=Credentials.load(credentials_file))
    server = WebServer(create_app(store, hub, None, security=security)).start()
    try:
        client = web_client(server.url)
        for path in ("/api/fleet", "/api/events", "/static/app.js", "/static/plotly.min.js"):
            assert client.request(path)[0] == 401, path
        status, body = client.page("/compare")
        assert status == 200 and 'action="/login"' in body  # redirected to the login form
        status, body = client.login("alice", "wrong password!")
        assert status == 401 and "wrong user or password" in body
        assert client.login("mallory", PASSWORD)[0] == 401
        anonymous_cookie = _cookie(client)
        with monkeypatch.context() as full:  # a login flood: the gate has no room for this attempt
            full.setattr(LoginGate, "check", _refused)
            status, body = client.login("alice", PASSWORD)
        assert status == 429 and "too many login attempts" in body
        anonymous_csrf = client.csrf
        status, body = client.login("alice", PASSWORD)
        assert status == 200 and 'data-page="fleet"' in body
        assert _cookie(client) != anonymous_cookie  # a fresh session id after login
        assert client.csrf != anonymous_csrf  # and a fresh CSRF token
        assert client.request("/api/fleet")[0] == 200
        client.page("/")
        status, _, _ = client.request(
            "/logout",
            f"csrf_token={client.csrf}".encode(),
            {"content-type": "application/x-www-form-urlencoded"},
        )
        assert status == 200
        assert client.request("/api/fleet")[0] == 401
    finally:
        server.stop()


@pytest.fixture
def login_server(store, hub, credentials_file) -> Iterator[WebServer]:
    server = WebServer(create_app(store, hub, None, security=WebSecurity(Credentials.load(credentials_file))))
    yield server.start()
    server.stop()


def _login_from(client: Any, address: str, password: str) -> tuple[int, dict[str, str]]:
    """Log in as alice with the client's CSRF token from `address` (uvicorn believes the
    X-Forwarded-For of a proxy on loopback, as the dashboard behind one does)."""
    form = {"username": "alice", "password": password, "csrf_token": client.csrf}
    status, headers, _ = client.request(
        "/login", urllib.parse.urlencode(form).encode(), {**FORM, "x-forwarded-for": address}
    )
    return status, {k.lower(): v for k, v in headers.items()}


def test_a_login_flood_from_one_address_is_locked_out_while_the_user_gets_in_from_another(
    login_server, web_client
):
    attacker = web_client(login_server.url)
    attacker.page("/login")
    with ThreadPoolExecutor(12) as pool:  # parallel guesses: one is checked, the others told to wait
        answers = list(pool.map(lambda n: _login_from(attacker, "203.0.113.7", f"guess-{n}"), range(12)))
    statuses = [status for status, _ in answers]
    checked = statuses.count(401)  # one, or two where a thread started over a second late
    assert 1 <= checked <= 2 and statuses.count(429) == 12 - checked
    assert all(int(headers["retry-after"]) >= 1 for status, headers in answers if status == 429)
    for n in range(5 - checked):  # one at a time (each answer waits out the pace) up to 5 failures
        assert _login_from(attacker, "203.0.113.7", f"again-{n}")[0] == 401
    status, headers = _login_from(attacker, "203.0.113.7", PASSWORD)
    assert status == 429 and int(headers["retry-after"]) > 60  # locked out: not even checked

    flooding, flood_answers = threading.Event(), []

    def flood() -> None:
        while not flooding.is_set():
            flood_answers.append(_login_from(attacker, "203.0.113.7", "more guesses")[0])

    flooder = threading.Thread(target=flood)
    flooder.start()
    try:
        user = web_client(login_server.url, {"x-forwarded-for": "198.51.100.9"})
        status, body = user.login("alice", PASSWORD)
    finally:
        flooding.set()
        flooder.join()
    assert status == 200 and 'data-page="fleet"' in body
    assert flood_answers and set(flood_answers) == {429}


@pytest.mark.parametrize("ending", ["logout", "expiry"])
def test_the_event_stream_ends_with_its_session(ending, login_server, hub, web_client, monkeypatch):
    monkeypatch.setattr(app_module, "KEEPALIVE_S", 0.2)
    if ending == "expiry":
        monkeypatch.setattr(security_module, "SESSION_TTL_S", 2)  # whole seconds: the cookie's Max-Age
    client = web_client(login_server.url)
    assert client.login("alice", PASSWORD)[0] == 200
    conn = http.client.HTTPConnection("127.0.0.1", login_server.port, timeout=5)
    conn.request("GET", "/api/events", headers={"cookie": f"{COOKIE}={_cookie(client)}"})
    response = conn.getresponse()
    assert response.status == 200 and response.readline().startswith(b"retry:")
    assert response.readline() == b"\n" and response.readline() == b": keepalive\n"  # it lives on
    if ending == "logout":
        client.request("/logout", f"csrf_token={client.csrf}".encode(), FORM)
    else:
        time.sleep(2.0)
    ended = time.monotonic()
    hub.publish([{"kind": "changed", "device": "orin-1", "arrived_ns": time.time_ns()}])
    rest = response.read()  # to the end of the stream: the socket's timeout fails the test if none
    conn.close()
    assert time.monotonic() - ended < 2.0 and b"event: batch" not in rest


def test_a_non_ascii_csrf_token_is_refused_not_a_crash(served, web_client):
    client = web_client(served.url)
    client.page("/login")
    for path in ("/login", "/logout"):
        status, _, _ = client.request(path, urllib.parse.urlencode({"csrf_token": "é"}).encode(), FORM)
        assert status == 403, path
    status, answer = client.post_json("/api/devices/orin-1/plans", {"plan_toml": PLAN}, csrf="é")
    assert status == 403 and "CSRF" in answer["detail"]  # the header: sent as the Latin-1 byte E9
    assert client.post_json("/api/devices/orin-1/plans", {"plan_toml": PLAN})[0] == 404  # no such device


def _cookie(client: Any) -> str:
    for handler in client.opener.handlers:
        jar = getattr(handler, "cookiejar", None)
        if jar is not None:
            return next(c.value for c in jar if c.name == COOKIE)
    raise AssertionError("no cookie jar")


def test_a_non_loopback_bind_needs_credentials_or_an_explicit_flag(credentials_file: Path):
    check_bind("127.0.0.1", None, False)
    check_bind("::1", None, False)
    check_bind("localhost", None, False)
    check_bind("0.0.0.0", Credentials.load(credentials_file), False)
    check_bind("0.0.0.0", None, True)
    for host in ("0.0.0.0", "::", "192.0.2.7"):
        with pytest.raises(ValueError, match="without a login"):
            check_bind(host, None, False)
    assert {"localhost", "127.0.0.1", "::1", "dash.example"} <= allowed_hosts_for(
        "0.0.0.0", ("dash.example",)
    )
    assert "0.0.0.0" not in allowed_hosts_for("0.0.0.0")
    assert [host_of(h) for h in ("[::1]:8321", "LocalHost:1", "[::1", "http://a.example:9")] == [
        "::1",
        "localhost",
        "",
        "a.example",
    ]


def test_an_open_dashboard_object_binds_only_to_loopback(tmp_path: Path):
    with pytest.raises(ValueError, match="without a login"):
        Dashboard("127.0.0.1:1", f"sqlite:///{tmp_path / 'c.db'}", host="0.0.0.0")
    assert not (tmp_path / "c.db").exists()  # refused before anything was opened


def test_anonymous_page_views_cannot_push_out_a_logged_in_session(monkeypatch):
    monkeypatch.setattr(security_module, "MAX_SESSIONS", 3)
    sessions = Sessions()
    alice = sessions.add(Session(user="alice"))
    anonymous = [sessions.add(Session()) for _ in range(10)]
    assert sessions.get(alice) is not None
    assert [sessions.get(a) is not None for a in anonymous] == [False] * 7 + [True] * 3


def test_collector_run_refuses_an_open_dashboard_on_the_network(tmp_path: Path):
    result = CliRunner().invoke(
        run, ["--store", f"sqlite:///{tmp_path / 'c.db'}", "--web", "0.0.0.0:8321", "--broker", "127.0.0.1:1"]
    )
    assert result.exit_code == 1 and "without a login" in result.output


def test_passwd_makes_a_missing_folder_owner_only_and_replaces_the_file_whole(tmp_path: Path, monkeypatch):
    """A fresh machine has no ~/.config/ctxscope: the README's own example must not end in a traceback."""
    monkeypatch.setenv("CTXSCOPE_TEST_PASSWORD", PASSWORD)
    path = tmp_path / "config" / "ctxscope" / "web-users"
    for user in ("alice", "bob"):
        result = CliRunner().invoke(passwd, [str(path), user, "--password-env", "CTXSCOPE_TEST_PASSWORD"])
        assert result.exit_code == 0, result.output
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    users = Credentials.load(path)
    assert users.check("alice", PASSWORD) and users.check("bob", PASSWORD)
    assert [p.name for p in path.parent.iterdir()] == ["web-users"]  # nothing staged left behind
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    result = CliRunner().invoke(
        passwd, [str(blocked / "web-users"), "carol", "--password-env", "CTXSCOPE_TEST_PASSWORD"]
    )
    assert result.exit_code == 1 and "cannot write" in result.output and result.exception is not None
    assert isinstance(result.exception, SystemExit)  # a one-line error, not a traceback
