"""Behind a login, an orchestrator's probes and a Prometheus scraper still get their answers: /healthz
and /readyz without a session and by address, a failing check's error only to a logged-in user, and
/metrics with the scraper's bearer token (and only /metrics)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ctxscope.collector import observability
from ctxscope.collector.run import run
from ctxscope.collector.web.app import create_app
from ctxscope.collector.web.auth import Credentials
from ctxscope.collector.web.security import MetricsTokenError, WebSecurity, load_metrics_token
from ctxscope.collector.web.server import WebServer
from tests.collector.web.conftest import PASSWORD

TOKEN = "s3cret-scraper-token-of-forty-characters"
BY_ADDRESS = {"host": "10.1.2.3:8321"}  # a probe or scraper comes by address: no allowed host name


@pytest.fixture
def guarded(store, hub, credentials_file):
    token = hashlib.sha256(TOKEN.encode()).digest()
    security = WebSecurity(Credentials.load(credentials_file), metrics_token_sha256=token)
    server = WebServer(create_app(store, hub, None, security=security)).start()
    yield server
    server.stop()


def test_probes_answer_by_address_without_a_login(guarded, web_client):
    probe = web_client(guarded.url, BY_ADDRESS)
    status, _, body = probe.request("/healthz")
    assert status == 200 and json.loads(body) == {"status": "ok"}
    status, _, body = probe.request("/readyz")
    assert status == 200 and json.loads(body) == {"ready": True, "checks": {"store": "ok"}}
    assert probe.request("/api/fleet")[0] == 400  # everything else still checks the Host
    assert web_client(guarded.url).request("/api/fleet")[0] == 401  # and the login


def test_a_failing_check_s_error_is_shown_to_a_logged_in_user_only(guarded, web_client, monkeypatch):
    failing = observability.Readiness(False, {"store": "OperationalError: unable to open /srv/secret.db"})
    monkeypatch.setattr(observability, "ready", lambda *_: failing)
    status, _, body = web_client(guarded.url, BY_ADDRESS).request("/readyz")
    assert status == 503 and json.loads(body) == {"ready": False, "checks": {"store": "failing"}}
    user = web_client(guarded.url)
    assert user.login("alice", PASSWORD)[0] == 200
    status, _, body = user.request("/readyz")
    assert status == 503 and json.loads(body)["checks"]["store"].startswith("OperationalError")


def test_metrics_open_to_the_scraper_token_and_to_nothing_else(guarded, web_client):
    scraper = web_client(guarded.url, {**BY_ADDRESS, "authorization": f"Bearer {TOKEN}"})
    status, headers, _ = scraper.request("/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert scraper.request("/api/fleet")[0] == 400  # the token opens /metrics only
    assert web_client(guarded.url, {"authorization": f"Bearer {TOKEN}"}).request("/api/fleet")[0] == 401
    for wrong in (f"Bearer {TOKEN}x", f"Basic {TOKEN}", "Bearer ", ""):
        assert web_client(guarded.url, {"authorization": wrong}).request("/metrics")[0] == 401, wrong
    assert web_client(guarded.url, BY_ADDRESS).request("/metrics")[0] == 400
    user = web_client(guarded.url)
    assert user.login("alice", PASSWORD)[0] == 200
    assert user.request("/metrics")[0] == 200  # a logged-in user reads them as before


def test_a_short_or_missing_metrics_token_is_refused_with_its_reason(tmp_path: Path):
    short = tmp_path / "token"
    short.write_text("too-short\n")
    with pytest.raises(MetricsTokenError, match="9 characters; it needs at least 32"):
        load_metrics_token(short)
    with pytest.raises(MetricsTokenError, match="cannot read"):
        load_metrics_token(tmp_path / "absent")
    short.write_text(f"  {TOKEN}  \nsecond line ignored\n")
    assert load_metrics_token(short) == hashlib.sha256(TOKEN.encode()).digest()
    short.write_text("too-short\n")
    args = ["--store", f"sqlite:///{tmp_path / 'c.db'}", "--broker", "127.0.0.1:1", "--metrics-token-file"]
    result = CliRunner().invoke(run, [*args, str(short)])
    assert result.exit_code == 1 and "it needs at least 32" in result.output
