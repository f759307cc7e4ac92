"""`ctxscope collector run` and the service seam: argument errors, client id rule, clean stop."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from ctxscope.broker import MosquittoBroker, free_port
from ctxscope.collector.run import run
from ctxscope.collector.service import build_service
from ctxscope.collector.store import StoreURLError, open_store
from ctxscope.shared.broker_access import split_host_port


def test_split_host_port() -> None:
    assert split_host_port("collector.lan:1883") == ("collector.lan", 1883)
    assert split_host_port("[::1]:1883") == ("::1", 1883)  # the brackets are no part of the address
    for bad in ("collector.lan", ":1883", "host:port", "host:0", "host:70000", "[::1:1883", "[]:1883"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            split_host_port(bad)


def test_unknown_store_url() -> None:
    with pytest.raises(StoreURLError, match="sqlite:///PATH"):
        open_store("mysql://db/ctxscope")


def test_a_sqlite_url_sets_how_long_records_stay_staged(tmp_path: Path) -> None:
    default = open_store(f"sqlite:///{tmp_path / 'a.sqlite'}")
    longer = open_store(f"sqlite:///{tmp_path / 'b.sqlite'}?merge_interval_s=300")
    try:
        assert default.merge_interval_s == 120.0  # type: ignore[attr-defined]
        assert longer.merge_interval_s == 300.0  # type: ignore[attr-defined]
        assert longer.path == tmp_path / "b.sqlite"  # type: ignore[attr-defined]
    finally:
        default.close()
        longer.close()


@pytest.mark.parametrize(
    "query", ["merge_interval_s=0.5", "merge_interval_s=7200", "merge_interval_s=soon", "merge=300", "x"]
)
def test_a_sqlite_url_refuses_other_options_and_intervals_out_of_range(tmp_path: Path, query: str) -> None:
    with pytest.raises(StoreURLError, match="merge_interval_s"):
        open_store(f"sqlite:///{tmp_path / 'a.sqlite'}?{query}")
    assert not (tmp_path / "a.sqlite").exists()


@pytest.mark.parametrize("option", ["--broker", "--web"])
def test_an_address_that_is_not_host_port_is_a_usage_error(tmp_path: Path, option: str) -> None:
    result = CliRunner().invoke(run, [option, "nowhere", "--store", f"sqlite:///{tmp_path / 'c.db'}"])
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}': 'nowhere' is not HOST:PORT" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--store", "sqlite:///x.sqlite?merge_interval_s=0"], "merge_interval_s must be 1 to 3600 seconds"),
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


@pytest.mark.slow
def test_collector_run_serves_the_dashboard(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    port = free_port()
    collector = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from ctxscope.cli import main; main()",
            "collector",
            "run",
            "--broker",
            f"{mosquitto.host}:{mosquitto.port}",
            "--store",
            f"sqlite:///{tmp_path / 'c.db'}",
            "--web",
            f"127.0.0.1:{port}",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/fleet", timeout=2) as reply:
                    assert reply.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline and collector.poll() is None, (
                    "the dashboard did not come up"
                )
                time.sleep(0.3)
    finally:
        collector.send_signal(signal.SIGTERM)
        _, err = collector.communicate(timeout=30)
    assert collector.returncode == 0, err
    assert "collector stopped: " in err
