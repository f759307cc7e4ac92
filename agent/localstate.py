"""The agent's local state file, and `ctxscope agent status`, which reads it without a broker.

`agent serve` rewrites the file every few seconds (atomically: write, then rename) next to its spool:
whether the broker link is up, how many records wait in the spool, the last connection error. A file
not refreshed for three intervals means the agent is not running (or hung).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ctxscope.agent.cliopts import identity_options
from ctxscope.agent.config import AgentConfig
from ctxscope.agent.streaming import configure
from ctxscope.ratelog import RateLimitedLog

log = logging.getLogger(__name__)
INTERVAL_S = 5.0


def state_path(config: AgentConfig) -> Path:
    spool = config.resolved_spool_path()
    return spool.with_name(f"{spool.stem}.state.json")


def write_state(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        partial.write_text(json.dumps(state, sort_keys=True))
        partial.replace(path)
    except OSError:
        partial.unlink(missing_ok=True)  # a full disk leaves no half-written file behind
        raise


class StateWriter:
    """Writes `snapshot()` to the state file every `interval_s` until `stop()`, then once more."""

    def __init__(self, path: Path, snapshot: Callable[[], dict[str, Any]], interval_s: float = INTERVAL_S):
        self.path = path
        self._snapshot = snapshot
        self._interval_s = interval_s
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="agent-state", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()
        self._write(running=False)

    def _loop(self) -> None:
        """Until stopped; a write that fails (a full disk, anything else) is logged, rate-limited, and
        tried again at the next interval: the thread never ends early, or `agent status` would call
        a running agent hung."""
        errors = RateLimitedLog(log)
        while True:
            try:
                self._write(running=True)
            except Exception as exc:
                errors.warning("state", "the agent's state file %s could not be written: %s", self.path, exc)
            if self._stopped.wait(self._interval_s):
                return

    def _write(self, running: bool) -> None:
        state = {**self._snapshot(), "running": running, "pid": os.getpid(), "updated_at": time.time()}
        state["interval_s"] = self._interval_s
        write_state(self.path, state)


def describe(state: dict[str, Any], now: float) -> tuple[bool, list[str]]:
    """(healthy, lines) for a state: healthy means running, fresh and connected."""
    age = now - float(state["updated_at"])
    fresh = age <= 3 * float(state.get("interval_s", INTERVAL_S))
    running = bool(state["running"]) and fresh
    if state["running"] and not fresh:
        activity = f"not running (state not refreshed for {age:.0f} s: stopped or hung)"
    else:
        activity = f"running (pid {state['pid']})" if running else "stopped"
    lines = [
        f"device:      {state['device']}",
        f"agent:       {activity}",
        f"broker:      {state['broker']} ({'connected' if state['connected'] else 'not connected'})",
        f"spool depth: {state['spool_depth']} records waiting"
        + (" (held: no collector is online to take them)" if state.get("holding") else ""),
        f"last error:  {state.get('last_error') or '-'}",
        f"updated:     {age:.0f} s ago",
    ]
    return running and bool(state["connected"]), lines


@click.command("status")
@identity_options
@click.option("--json", "as_json", is_flag=True, help="print the state file and the verdict as JSON.")
def status(config_path: Path | None, device: str | None, spool: Path | None, as_json: bool) -> None:
    """Show the local agent's state: running, connected, spool depth, last error.

    Exit status: 0 running and connected to the broker; 1 running but not connected, stopped, or not
    refreshed; 2 no state file (the agent never ran with this config).
    """
    config = configure(config_path, device=device, spool=spool)
    path = state_path(config)
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        click.echo(f"no agent state at {path}: has `ctxscope agent serve` run with this config?", err=True)
        raise SystemExit(2) from None
    healthy, lines = describe(state, time.time())
    if as_json:
        verdict = {"state_file": str(path), "healthy": healthy, "summary": lines, "state": state}
        click.echo(json.dumps(verdict))
    else:
        click.echo("\n".join(lines))
    raise SystemExit(0 if healthy else 1)
