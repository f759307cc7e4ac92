"""The shipped broker configuration, the broker check and the collector's refusal to run unsafely."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from ctxscope.broker import MosquittoBroker, mosquitto_binary
from ctxscope.collector.commands import send_plan
from ctxscope.collector.run import run
from ctxscope.collector.security.broker_check import conf_problems, parse_conf
from ctxscope.collector.security.broker_config import COMPOSE_PATHS, render_acl, render_mosquitto_conf

REPO = Path(__file__).resolve().parents[3]


def test_compose_broker_config_is_the_rendered_one_and_passes_the_check() -> None:
    shipped = (REPO / "docker" / "mosquitto.conf").read_text()
    assert shipped == render_mosquitto_conf(COMPOSE_PATHS)
    assert conf_problems(parse_conf(shipped)) == []


def test_stock_mosquitto_defaults_are_flagged() -> None:
    problems = " | ".join(conf_problems(parse_conf("listener 1883\nallow_anonymous true\n")))
    for expected in (
        "max_queued_messages 1000",
        "persistence is off",
        "allow_anonymous true",
        "no password_file and acl_file",
        "no TLS listener",
    ):
        assert expected in problems
    slow_save = conf_problems(parse_conf("persistence true\nautosave_interval 1800\nmax_queued_messages 0\n"))
    assert any("autosave_interval 1800 s" in p for p in slow_save)


def test_acl_confines_devices_by_pattern_and_names_the_service_identities() -> None:
    acl = render_acl()
    assert "pattern write ctxscope/v1/%u/result" in acl
    assert "pattern read ctxscope/v1/%u/cmd/+" in acl
    assert "pattern write ctxscope/v1/%u/cmd" not in acl  # devices never write commands
    assert "user ctxscope_collector_cmd" in acl and "user ctxscope_operator" in acl


@pytest.mark.parametrize("command", [run, send_plan])
def test_a_remote_broker_without_credentials_and_tls_is_refused(command: object, tmp_path: Path) -> None:
    args = ["--broker", "192.0.2.10:1883"]
    args += (
        ["--no-web", "--store", f"sqlite:///{tmp_path / 'c.sqlite'}"]
        if command is run
        else ["dev-a", "cpu-smoke"]
    )
    result = CliRunner().invoke(command, args)  # type: ignore[arg-type]
    assert result.exit_code != 0
    assert "refuses to connect to broker '192.0.2.10' without a username, a password, TLS" in result.output


def test_require_safe_broker_refuses_an_anonymous_stock_broker(tmp_path: Path) -> None:
    if mosquitto_binary() is None:
        pytest.skip("mosquitto is not installed")
    broker = MosquittoBroker(tmp_path / "broker")
    broker.start()
    try:
        stock = tmp_path / "stock.conf"
        stock.write_text(f"listener {broker.port} 127.0.0.1\nallow_anonymous true\n")
        args = [
            "--broker",
            f"127.0.0.1:{broker.port}",
            "--no-web",
            "--store",
            f"sqlite:///{tmp_path / 'c.db'}",
        ]
        result = CliRunner().invoke(run, [*args, "--broker-config", str(stock), "--require-safe-broker"])
        assert result.exit_code != 0
        assert "refusing to ingest from an unsafe broker" in result.output
        assert "accepts clients without credentials" in result.output
        assert "max_queued_messages 1000" in result.output
        unverified = CliRunner().invoke(run, [*args, "--require-safe-broker"])
        assert "cannot verify the broker's queue limits" in unverified.output
    finally:
        broker.stop()


def test_every_test_that_docs_security_cites_exists() -> None:
    doc = (REPO / "docs" / "security.md").read_text()
    cited = set(re.findall(r"\b(test_[a-z0-9_]+)\b(?!\.py)", doc))
    defined = {
        name
        for path in (REPO / "tests").rglob("test_*.py")
        for name in re.findall(r"^def (test_[a-z0-9_]+)", path.read_text(), flags=re.M)
    }
    assert cited and cited <= defined, f"docs/security.md cites missing tests: {sorted(cited - defined)}"
