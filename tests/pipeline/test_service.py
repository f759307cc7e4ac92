"""`ctxscope collector run` and the service seam: argument errors, client id rule, clean stop."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from ctxscope.broker import MosquittoBroker
from ctxscope.collector.service import build_service, parse_broker, run
from ctxscope.collector.store import StoreURLError, open_store


def test_parse_broker() -> None:
    assert parse_broker("collector.lan:1883") == ("collector.lan", 1883)
    for bad in ("collector.lan", ":1883", "host:port", "host:0", "host:70000"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            parse_broker(bad)


def test_unknown_store_url() -> None:
    with pytest.raises(StoreURLError, match="sqlite:///PATH"):
        open_store("mysql://db/ctxscope")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--broker", "nowhere"], "is not HOST:PORT"),
        (["--store", "mysql://db/x"], "unsupported store URL"),
        (["--client-id", "jetson-1"], "also a valid device id"),
    ],
)
def test_cli_turns_bad_arguments_into_clear_errors(tmp_path: Path, args: list[str], message: str) -> None:
    store = ["--store", f"sqlite:///{tmp_path / 'c.db'}"] if "--store" not in args else []
    result = CliRunner().invoke(run, [*args, *store])
    assert result.exit_code == 1
    assert message in result.output


@pytest.mark.slow
def test_service_starts_and_stops_with_counters(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    service = build_service(
        f"{mosquitto.host}:{mosquitto.port}", f"sqlite:///{tmp_path / 'c.db'}", "svc_test"
    )
    service.start()
    assert service.ingest.wait_connected(10)
    counters = service.stop()
    assert (counters.received, counters.stored) == (0, 0)
