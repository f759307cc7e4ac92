"""The `ctxscope` console script: groups `agent` and `collector`, commands `demo` and `report`."""

from __future__ import annotations

import click

from ctxscope import __version__
from ctxscope.lazycli import LazyGroup

COMMANDS = {
    "agent": ("ctxscope.agent.cli", "agent", "Device side: run sweeps, list models, serve headless."),
    "collector": ("ctxscope.collector.cli", "collector", "Host side: ingest, store, dashboard, watch."),
    "demo": ("ctxscope.demo", "demo", "Broker + collector + a local agent, live in the terminal."),
    "report": ("ctxscope.collector.report", "report", "Static HTML report with figures and exports."),
}


@click.group(cls=LazyGroup, lazy_commands=COMMANDS)
@click.version_option(__version__, prog_name="ctxscope")
def main() -> None:
    """ctxscope: long-context inference characterization for edge and desktop GPUs."""
