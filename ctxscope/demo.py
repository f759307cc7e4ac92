"""`ctxscope demo`: a broker, the collector (store + dashboard) and one local agent, live.

Needs no GPU, broker or database server: it starts its own mosquitto (or the embedded amqtt) on a
free loopback port, or uses the broker named with --broker (starting one there if none answers);
stores into SQLite; starts `ctxscope agent serve` as a child process; sends it the demo plan
through the collector, as a user would from the dashboard; and shows devices, the run's progress
and results as they arrive. Ctrl-C (or `--duration`) stops the agent first, which finishes its current
point, publishes `offline` and flushes its spool (a second Ctrl-C stops it at once, its current point
lost), then lets the collector drain, then stops the collector and the broker it started: nothing
recorded is lost, and the summary proves it from the agent's spool and the collector's store.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from importlib import resources
from pathlib import Path
from types import FrameType
from typing import Any

import click
from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from ctxscope.agent.transport.spool import Spool
from ctxscope.collector.reference_device import checkout_results, import_reference
from ctxscope.collector.shrunk import labelled_results
from ctxscope.collector.store import Store
from ctxscope.collector.watch import frame
from ctxscope.compat import tomllib
from ctxscope.hostport import HOST_PORT
from ctxscope.paths import demo_dir
from ctxscope.shared.broker_access import split_host_port

DEMO_DEVICE = "demo-local"
# How long a stopped agent may take to finish its current point (a point of the demo plan takes ~15 s
# on two idle CPU cores, several times that while other work shares them); a second Ctrl-C cuts it short.
AGENT_STOP_GRACE_S = 300.0


class Stop(Exception):
    """Raised from the signal handler to leave the live loop."""


def _agent_command(broker: str, spool: Path) -> list[str]:
    return [
        sys.executable,
        "-c",
        "from ctxscope.cli import main; main()",
        "agent",
        "serve",
        "--device",
        DEMO_DEVICE,
        "--broker",
        broker,
        "--spool",
        str(spool),
        "--torch-device",
        "cpu",
    ]


def _import_reference(console: Console, store: Store) -> None:
    """Put the committed GPU characterizations beside the live agent, one labelled device per card."""
    results = checkout_results()
    if results is None:
        console.print("reference: no results/ folder here (not a checkout); only the live agent is shown")
        return
    imports, unnamed = import_reference(store, results)
    for device, summary in imports:
        console.print(
            f"reference: {device.device} = {device.description}; {summary.stored} records stored,"
            f" {summary.duplicates} already present, {summary.bad_lines} bad"
        )
    if unnamed:
        console.print(f"reference: {len(unnamed)} record files name no GPU (or cannot be read): left out")


def _wait_online(store: Store, timeout_s: float, agent: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if agent.poll() is not None:
            raise click.ClickException(f"the agent exited with code {agent.returncode} before coming online")
        if any(d["device"] == DEMO_DEVICE and d.get("state") in ("online", "busy") for d in store.devices()):
            return
        time.sleep(0.2)
    raise click.ClickException(f"the agent did not come online within {timeout_s:.0f} s")


def _drain(store: Store, device: str, stream: str, expected: int, timeout_s: float) -> int:
    """Wait until the collector holds `expected` records of the stream; return how many it holds."""
    deadline = time.monotonic() + timeout_s
    held = len(store.record_seqs(device, stream))
    while held < expected and time.monotonic() < deadline:
        time.sleep(0.2)
        held = len(store.record_seqs(device, stream))
    return held


@click.command("demo")
@click.option(
    "--broker",
    type=HOST_PORT,
    default=None,
    help="HOST:PORT of a broker to use (one is started there if none answers on a loopback address); "
    "default: a private broker on a free loopback port, never one found running",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="where the store, spool and logs go (default: the user's state dir, ctxscope/demo)",
)
@click.option(
    "--web-port",
    default=8321,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="dashboard port (0 picks a free one)",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=1.0),
    default=None,
    help="stop by itself after this many seconds (for scripts and CI)",
)
@click.option("--until-done", is_flag=True, help="stop once the demo plan's run has finished")
@click.option(
    "--headless",
    is_flag=True,
    help="no live view: print one line per result, then a summary (the default where stdout is no terminal)",
)
@click.option(
    "--reference/--no-reference",
    default=True,
    show_default=True,
    help="also import the committed GPU results (a checkout's results/), one device per card"
    " (h200-reference, h100-reference)",
)
def demo(
    broker: str | None,
    workdir: Path | None,
    web_port: int,
    duration: float | None,
    until_done: bool,
    headless: bool,
    reference: bool,
) -> None:
    """Broker + collector + a local agent, live in the terminal (Ctrl-C stops everything cleanly)."""
    from ctxscope.broker import BrokerError, ensure_broker, start_private_broker
    from ctxscope.collector.web.server import Dashboard

    # a live view redraws a terminal: piped or logged, it would show nothing until the end
    headless = headless or not sys.stdout.isatty()
    console = Console(stderr=headless, soft_wrap=headless)
    workdir = workdir or demo_dir()
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        handle = ensure_broker(*split_host_port(broker)) if broker else start_private_broker()
    except BrokerError as exc:
        raise click.ClickException(str(exc)) from exc
    console.print(f"[bold]ctxscope demo[/]: {handle.describe()}")

    # whatever stops the command before the agent runs, the broker it started must not outlive it
    store_url = f"sqlite:///{workdir / 'collector.sqlite'}"
    try:
        dashboard = Dashboard(handle.address, store_url, port=web_port).start()
    except RuntimeError as exc:  # a busy --web-port
        handle.stop()
        raise click.ClickException(f"{exc}; choose another with --web-port (0 picks a free one)") from exc
    except BaseException:
        handle.stop()
        raise
    store = dashboard.service.store
    console.print(f"collector: store {workdir / 'collector.sqlite'}, dashboard {dashboard.web.url}/")
    if reference:
        _import_reference(console, store)

    spool_path = workdir / "agent-spool.sqlite"
    agent_log = (workdir / "agent.log").open("ab")
    agent = subprocess.Popen(
        _agent_command(handle.address, spool_path),
        stdout=agent_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    console.print(f"agent: {DEMO_DEVICE} (pid {agent.pid}), spool {spool_path}, log {workdir / 'agent.log'}")

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        raise Stop("Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name)

    # SIGHUP: the terminal was closed; the agent and the broker run in sessions of their own, so only
    # this clean stop ends them
    stop_signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {signum: signal.signal(signum, request_stop) for signum in stop_signals}
    try:
        try:
            _wait_online(store, 90.0, agent)
            plan = tomllib.loads(resources.files("ctxscope").joinpath("demo_plan.toml").read_text())
            command = dashboard.commands.send_plan(DEMO_DEVICE, plan)
            ack = dashboard.commands.wait_ack(command.command_id, 30.0)
            if ack is None or not ack.accepted:
                raise click.ClickException(
                    f"the agent did not accept the demo plan: {ack.reason if ack else 'no ack'}"
                )
            console.print(f"plan {plan['name']!r} accepted by {DEMO_DEVICE}; Ctrl-C stops the demo")
            stopped_by = _show(console, store, duration, until_done, headless, agent)
        except Stop as stop:
            stopped_by = str(stop)
    finally:
        for signum in stop_signals:  # a second signal must not cut the clean-up short...
            signal.signal(signum, signal.SIG_IGN)
        exit_code = _stop_agent(agent, console)  # ...but may the agent's current point
        agent_log.close()
        spool = Spool(spool_path, DEMO_DEVICE)
        stream, sent, left = spool.stream, spool.high_water_seq(), spool.backlog()
        spool.close()
        held = _drain(store, DEMO_DEVICE, stream, sent - left, 30.0)
        gaps = [g for g in store.gaps(DEMO_DEVICE) if g.stream == stream]
        dashboard.stop()
        handle.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    lost = sent - left - held
    console.print(
        f"stopped ({stopped_by}); agent exit code {exit_code}. "
        f"Agent stream {stream}: {sent} records written, "
        f"{left} still spooled for the next start; collector holds {held} of them, "
        f"{lost} lost, {len(gaps)} gaps."
    )
    if lost or gaps or exit_code != 0:
        raise SystemExit(1)


def _show(
    console: Console,
    store: Store,
    duration: float | None,
    until_done: bool,
    headless: bool,
    agent: subprocess.Popen[bytes],
) -> str:
    """Show results until the duration ends or (with until_done) the run finishes; say which."""
    deadline = time.monotonic() + duration if duration is not None else None

    ended: list[str] = []

    def running() -> bool:
        if agent.poll() is not None:
            raise click.ClickException(f"the agent exited with code {agent.returncode}; see its log")
        if until_done and any(run["outcome"] for run in store.runs(DEMO_DEVICE)):
            ended.append("run finished")
        elif deadline is not None and time.monotonic() >= deadline:
            ended.append("duration")
        return not ended

    if headless:
        seen: set[str] = set()
        while True:
            for row in labelled_results(store, DEMO_DEVICE):
                key = f"{row['run_id']}/{row['point_id']}"
                if key not in seen:
                    seen.add(key)
                    console.print(_result_line(row))
            if not running():
                return ended[0]
            time.sleep(0.5)
    header = Text(
        "Live view of the collector's store; the dashboard shows the same. Ctrl-C stops.", style="dim"
    )
    with Live(Group(header, frame(store)), console=console, refresh_per_second=4) as live:
        while running():
            time.sleep(0.5)
            live.update(Group(header, frame(store)))
        live.update(Group(header, frame(store)))
    return ended[0]


def _result_line(row: dict[str, Any]) -> str:
    metrics = row["metrics"]
    parts = [f"result {row['model']} @ {row['context_len']} tokens: {row['outcome']}"]
    for name in ("ttft", "decode_per_token"):
        metric = metrics.get(name)
        if metric:
            spread = max(metric["samples"]) - min(metric["samples"])
            parts.append(
                f"{name} {statistics.median(metric['samples']):.3f} {metric['unit']} "
                f"(n={len(metric['samples'])}, range {spread:.3f})"
            )
    return ", ".join(parts)


def _stop_agent(agent: subprocess.Popen[bytes], console: Console, grace_s: float = AGENT_STOP_GRACE_S) -> int:
    """SIGTERM: the agent finishes its current point, publishes offline and flushes its spool, within
    `grace_s`. A second Ctrl-C (or SIGTERM) meanwhile kills it at once: the point in progress is lost,
    everything it recorded stays in its spool for the next start. Call from the main thread."""
    if agent.poll() is not None:
        return agent.wait()
    hurry = threading.Event()
    stop_signals = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.signal(signum, lambda *_: hurry.set()) for signum in stop_signals}
    try:
        agent.send_signal(signal.SIGTERM)
        console.print(
            f"stopping the agent: it finishes its current point first (up to {grace_s:.0f} s); "
            "Ctrl-C again stops it at once"
        )
        deadline = time.monotonic() + grace_s
        while agent.poll() is None and not hurry.is_set() and time.monotonic() < deadline:
            hurry.wait(0.2)
        if agent.poll() is None:
            agent.kill()
        return agent.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
