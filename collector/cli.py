"""`ctxscope collector`: the host-side commands. Each lives in the module of its subsystem."""

from __future__ import annotations

import click

from ctxscope.lazycli import LazyGroup

COMMANDS = {
    "run": (
        "ctxscope.collector.run",
        "run",
        "Ingest records from the broker into the store (and serve the web UI).",
    ),
    "watch": ("ctxscope.collector.watch", "watch", "Live terminal view of devices, runs and results."),
    "send-plan": ("ctxscope.collector.commands", "send_plan", "Send a run plan to a device."),
    "import": (
        "ctxscope.collector.importer",
        "import_command",
        "Import JSON-lines record files (plain or gzip) into the store.",
    ),
    "prune": (
        "ctxscope.collector.store.retention",
        "prune",
        "Roll up old raw telemetry and delete it (retention policy).",
    ),
    "export": ("ctxscope.collector.export", "export", "Export stored results to CSV or Parquet."),
    "enroll": (
        "ctxscope.collector.security.cli",
        "enroll",
        "Give a device (or another collector) broker credentials.",
    ),
    "revoke": ("ctxscope.collector.security.cli", "revoke", "Remove a device's (or a collector's) access."),
    "renew-cert": (
        "ctxscope.collector.security.cli",
        "renew_cert",
        "Issue the broker a new TLS certificate before the old one expires.",
    ),
    "passwd": ("ctxscope.collector.web.auth", "passwd", "Add a dashboard user or change their password."),
}


@click.group(cls=LazyGroup, lazy_commands=COMMANDS)
def collector() -> None:
    """Host side: ingest from many devices, store, aggregate and show live."""
