"""`ctxscope agent`: the device-side commands. Each lives in the module of its subsystem."""

from __future__ import annotations

import click

from ctxscope.lazycli import LazyGroup

COMMANDS = {
    "models": (
        "ctxscope.agent.zoo.cli",
        "models",
        "List the model zoo: family, parameters, cache bytes/token.",
    ),
    "run": ("ctxscope.agent.engine.cli", "run", "Run a sweep plan and stream its results."),
    "maxctx": ("ctxscope.agent.engine.cli", "maxctx", "Search the longest context that fits, per model."),
    "telemetry": ("ctxscope.agent.telemetry.cli", "telemetry", "Detect telemetry backends and sample them."),
    "profile": (
        "ctxscope.agent.profiling.cli",
        "profile",
        "Operator shares from device time, with roofline.",
    ),
    "status": (
        "ctxscope.agent.localstate",
        "status",
        "The local agent's state: connected, spool depth, last error.",
    ),
    "calibrate": (
        "ctxscope.agent.calibrate.cli",
        "calibrate",
        "Measure the operating point and kernel-family rates, for prediction.",
    ),
    "serve": (
        "ctxscope.agent.daemon",
        "serve",
        "Run headless: publish status, accept plans from the collector.",
    ),
}


@click.group(cls=LazyGroup, lazy_commands=COMMANDS)
def agent() -> None:
    """Device side: measure long-context inference and stream the records to a collector."""
