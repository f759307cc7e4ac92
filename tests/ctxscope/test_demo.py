"""`ctxscope demo` end to end: broker + collector + a real agent process, bounded, without a terminal."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ctxscope.broker import free_port
from ctxscope.collector.readmodel import views
from ctxscope.collector.store import Store, open_store
from ctxscope.demo import AGENT_STOP_GRACE_S, _stop_agent

DEMO = [sys.executable, "-c", "from ctxscope.cli import main; main()", "demo"]
POINTS = 8  # demo_plan.toml: 2 models x 4 context lengths


def _summary(output: str) -> dict[str, int]:
    found = re.search(
        r"(\d+) records written, (\d+) still spooled.*?holds (\d+) of them, (\d+) lost, (\d+) gaps",
        output,
        re.S,
    )
    assert found, output
    written, spooled, held, lost, gaps = map(int, found.groups())
    return {"written": written, "spooled": spooled, "held": held, "lost": lost, "gaps": gaps}


@pytest.mark.slow
@pytest.mark.timeout(1000)  # a whole demo run on a loaded 2-core machine
def test_demo_runs_the_plan_and_loses_nothing(tmp_path: Path) -> None:
    # A free port where nothing listens: the demo has to start its own broker there.
    port = free_port()
    done = subprocess.run(
        [
            *DEMO,
            "--broker",
            f"127.0.0.1:{port}",
            "--workdir",
            str(tmp_path),
            "--web-port",
            "0",
            "--headless",
            "--until-done",
            "--duration",
            # a bound against hanging, not a speed target: 2 CPU cores need ~5 min, twice that when
            # other test runs share them
            "840",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert f"127.0.0.1:{port} (private mosquitto)" in output or "(embedded amqtt)" in output
    assert "stopped (run finished)" in output
    assert len(re.findall(r"^result .*: ok, ttft", output, re.M)) == POINTS, output
    # The live CPU agent measures shrunk models, and says so on every line.
    assert len(re.findall(r"^result [a-z0-9.-]+ \(shrunk\) @ ", output, re.M)) == POINTS, output
    assert re.search(
        r"reference: h200-reference = .*H200.*; \d{4,} records stored, 0 already present, 0 bad", output
    )
    assert re.search(r"reference: h100-reference = .*H100.*; \d+ records stored, 0 already present", output)
    summary = _summary(output)
    assert summary["lost"] == 0 and summary["gaps"] == 0
    assert summary["held"] == summary["written"] - summary["spooled"] > POINTS

    store = open_store(f"sqlite:///{tmp_path / 'collector.sqlite'}")
    try:
        results = store.results("demo-local")
        assert len(results) == POINTS
        for row in results:
            assert row["metrics"]["ttft"]["unit"] and len(row["metrics"]["ttft"]["samples"]) >= 3
            # On the CPU, Mamba-2 runs transformers' torch code, and the result says so.
            if row["family"] == "ssm":
                assert "fallback" in " ".join(row["implementation"].values()).lower(), row["implementation"]
        assert [run["outcome"] for run in store.runs("demo-local")] == ["completed"]
        assert store.telemetry_channels("demo-local"), "host telemetry was not streamed"
        assert [d["state"] for d in store.devices() if d["device"] == "demo-local"] == ["offline"]
        _reference_beside_live(store)
    finally:
        store.close()


def _reference_beside_live(store: Store) -> None:
    """The fleet shows each card's reference beside the live agent; the paper's figures sit only beside
    real model sizes, never beside the shrunk CPU models."""
    fleet = views.fleet(store)
    assert {d["device"] for d in fleet["devices"]} == {"demo-local", "h200-reference", "h100-reference"}
    live = views.device(store, "demo-local")
    live_models = {p["model"] for p in _curves(live)}
    assert live_models == {"qwen2.5-0.5b (shrunk)", "mamba2-130m (shrunk)"}, live_models
    assert live["reference_max_context"] == {}
    reference = views.device(store, "h200-reference")
    reference_models = {p["model"] for p in _curves(reference)}
    assert {"qwen2.5-0.5b", "mamba2-780m"} <= reference_models, reference_models
    assert not any("shrunk" in m for m in reference_models)
    assert reference["reference_max_context"], "real models get the paper's figures beside them"


def _curves(view: dict[str, Any]) -> list[dict[str, Any]]:
    points: list[dict[str, Any]] = view["characterization"]["points"]
    return points


@pytest.mark.slow
@pytest.mark.timeout(900)  # a whole demo run on a loaded 2-core machine
def test_ctrl_c_stops_everything_cleanly(tmp_path: Path) -> None:
    """Ctrl-C in a terminal signals the whole foreground process group, the broker the demo started
    included: it once died at once, before the agent's last records reached the collector."""
    demo = subprocess.Popen(
        [*DEMO, "--workdir", str(tmp_path), "--web-port", "0", "--headless"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a process group of its own, as a terminal gives a command
    )
    assert demo.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 180
    for line in demo.stdout:
        lines.append(line)
        if line.startswith("result ") or time.monotonic() > deadline:
            break
    os.killpg(demo.pid, signal.SIGINT)
    rest, _ = demo.communicate(timeout=AGENT_STOP_GRACE_S + 120)
    output = "".join(lines) + rest
    assert demo.returncode == 0, output
    assert "stopped (Ctrl-C)" in output
    summary = _summary(output)
    assert summary["lost"] == 0 and summary["gaps"] == 0 and summary["spooled"] == 0


@pytest.mark.slow
@pytest.mark.timeout(900)  # a whole demo run on a loaded 2-core machine
def test_a_stopped_demo_gives_back_the_signal_handlers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from ctxscope import demo as demo_module

    def stopped_at_once(*_args: object) -> None:
        raise demo_module.Stop("SIGTERM")

    monkeypatch.setattr(demo_module, "_wait_online", stopped_at_once)
    stop_signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    before = {signum: signal.getsignal(signum) for signum in stop_signals}
    broker = f"127.0.0.1:{free_port()}"
    args = ["--broker", broker, "--workdir", str(tmp_path), "--web-port", "0", "--headless"]
    result = CliRunner().invoke(demo_module.demo, args)
    assert "stopped (SIGTERM)" in result.output, result.output
    assert {signum: signal.getsignal(signum) for signum in stop_signals} == before


@pytest.mark.slow
@pytest.mark.timeout(900)  # a whole demo run on a loaded 2-core machine
def test_demo_on_a_machine_without_mosquitto_uses_the_embedded_broker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from ctxscope.demo import demo

    monkeypatch.setattr("ctxscope.broker.mosquitto_binary", lambda: None)
    port = free_port()
    result = CliRunner().invoke(
        demo,
        [
            "--broker",
            f"127.0.0.1:{port}",
            "--workdir",
            str(tmp_path),
            "--web-port",
            "0",
            "--headless",
            "--until-done",
            "--duration",
            "540",
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"127.0.0.1:{port} (embedded amqtt)" in result.output
    assert "stopped (run finished)" in result.output
    summary = _summary(result.output)
    assert summary["lost"] == 0 and summary["gaps"] == 0 and summary["held"] > POINTS


SLOW_TO_STOP = (
    "import signal, time; signal.signal(signal.SIGTERM, lambda *_: None); "
    "print('up', flush=True); time.sleep(120)"
)


def _slow_agent() -> subprocess.Popen[bytes]:
    """A child that takes SIGTERM but goes on, as an agent in the middle of a long point does."""
    child = subprocess.Popen([sys.executable, "-c", SLOW_TO_STOP], stdout=subprocess.PIPE)
    assert child.stdout is not None and child.stdout.readline() == b"up\n"
    return child


def test_a_second_ctrl_c_stops_the_agent_at_once() -> None:
    """A point on a loaded 2-core machine outlasted the demo's wait (90 s then): the agent was killed and
    the demo failed. The wait is longer now, and a second Ctrl-C cuts it short."""
    from rich.console import Console

    child = _slow_agent()
    threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()
    started = time.monotonic()
    assert _stop_agent(child, Console(quiet=True), grace_s=60.0) == -signal.SIGKILL
    assert time.monotonic() - started < 10


def test_an_agent_that_stops_in_its_grace_is_not_killed() -> None:
    from rich.console import Console

    child = subprocess.Popen(
        [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE,
    )
    assert child.stdout is not None and child.stdout.readline() == b"up\n"
    assert _stop_agent(child, Console(quiet=True), grace_s=60.0) == -signal.SIGTERM
    slow = _slow_agent()
    started = time.monotonic()
    assert _stop_agent(slow, Console(quiet=True), grace_s=1.0) == -signal.SIGKILL  # past its grace
    assert 1.0 <= time.monotonic() - started < 10


def test_a_broker_that_is_not_host_port_is_one_line(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from ctxscope.demo import demo

    result = CliRunner().invoke(demo, ["--broker", "nohost", "--headless", "--workdir", str(tmp_path)])
    assert result.exit_code == 2  # a usage error, as every bad argument is
    assert result.output.strip().splitlines()[-1] == (
        "Error: Invalid value for '--broker': 'nohost' is not HOST:PORT, or [ADDRESS]:PORT for IPv6, "
        "with a port from 1 to 65535"
    )


def test_a_busy_web_port_is_one_line_and_stops_the_broker_the_demo_started(tmp_path: Path) -> None:
    import socket

    from click.testing import CliRunner

    from ctxscope.broker import broker_answers
    from ctxscope.demo import demo

    broker_port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        web_port = taken.getsockname()[1]
        args = ["--broker", f"127.0.0.1:{broker_port}", "--workdir", str(tmp_path), "--headless"]
        result = CliRunner().invoke(demo, [*args, "--web-port", str(web_port), "--no-reference"])
    assert result.exit_code == 1, result.output
    assert f"cannot listen on 127.0.0.1:{web_port}: Address already in use" in result.output
    assert "--web-port" in result.output and "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert not broker_answers("127.0.0.1", broker_port)  # the mosquitto it started is gone
