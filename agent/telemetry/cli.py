"""`ctxscope agent telemetry`: list the detected backends, sample them, print mean/min/max per metric."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
import numpy as np
from rich.console import Console
from rich.table import Table

from ctxscope.agent.telemetry.detect import detect_backends
from ctxscope.agent.telemetry.session import TelemetrySession


@click.command("telemetry")
@click.option(
    "--seconds", type=click.FloatRange(min=0.1), default=5.0, show_default=True, help="How long to sample."
)
@click.option(
    "--rate-hz", type=click.FloatRange(min=0.1), default=20.0, show_default=True, help="Sampling rate."
)
@click.option(
    "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write the samples here as JSON."
)
@click.option("--json", "as_json", is_flag=True, help="print the samples as JSON (the table goes to stderr).")
def telemetry(seconds: float, rate_hz: float, output: Path | None, as_json: bool) -> None:
    """Detect telemetry backends and sample them."""
    console = Console(stderr=as_json)
    backends = detect_backends(rate_hz)
    for backend in backends:
        facts = ", ".join(f"{k}={v}" for k, v in backend.info().items())
        console.print(
            f"[bold]{backend.name}[/bold]: {len(backend.metrics())} metrics"
            + (f" ({facts})" if facts else "")
        )
        if backend.power_method:
            console.print(f"  power_w: {backend.power_method}")
    with TelemetrySession(backends, rate_hz=rate_hz) as session:
        time.sleep(seconds)
    table = Table("backend")
    table.add_column("metric", no_wrap=True)
    for heading in ("unit", "n", "rate Hz", "mean", "min", "max"):
        table.add_column(heading, justify="right")
    dump: dict[str, object] = {}
    for backend in backends:
        chunk = session.ring.get(backend.name)
        if chunk is None:
            continue
        span_s = (chunk.t_ns[-1] - chunk.t_ns[0]) / 1e9 if len(chunk) > 1 else 0.0
        rate = f"{(len(chunk) - 1) / span_s:.1f}" if span_s > 0 else "-"
        units = backend.metrics()
        for name, values in sorted(chunk.channels.items()):
            ok = values[np.isfinite(values)]
            if len(ok):
                table.add_row(
                    backend.name,
                    name,
                    units[name],
                    str(len(ok)),
                    rate,
                    f"{ok.mean():.4g}",
                    f"{ok.min():.4g}",
                    f"{ok.max():.4g}",
                )
        dump[backend.name] = {
            "info": backend.info(),
            "power_method": backend.power_method,
            "t_ns": chunk.t_ns.tolist(),
            "channels": {
                name: {
                    "unit": units[name],
                    "values": [None if not np.isfinite(v) else float(v) for v in values],
                }
                for name, values in chunk.channels.items()
            },
        }
    console.print(table)
    for error in session.errors:
        console.print(f"[yellow]warning[/yellow]: {error}")
    samples = {"clock": "monotonic", "rate_hz": rate_hz, "sources": dump}
    if output is not None:
        output.write_text(json.dumps(samples, indent=1))
        console.print(f"samples written to {output}")
    if as_json:
        click.echo(json.dumps(samples))
