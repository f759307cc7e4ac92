"""`ctxscope agent calibrate`: the target's operating point and one microbenchmark per kernel family,
written as JSON lines (`--out`) or streamed to a broker (`--broker` / `--config`) like `agent run`."""

from __future__ import annotations

import contextlib
import statistics
from pathlib import Path

import click

from ctxscope.agent.cliopts import progress_option, record_options, torch_device_option


@click.command()
@torch_device_option
@click.option(
    "--budget-s",
    type=click.FloatRange(min=1.0, max=120.0),
    default=90.0,
    show_default=True,
    help="time for all benchmarks together (each gets an equal share; at most 2 minutes)",
)
@click.option("--tiny", is_flag=True, help="tiny problem sizes (tests)")
@progress_option
@record_options
def calibrate(
    device: str | None,
    budget_s: float,
    tiny: bool,
    no_progress: bool,
    out: Path | None,
    broker: str | None,
    config_path: Path | None,
) -> None:
    """Measure this device's operating point and kernel-family rates for prediction.

    \b
    Exit status:
      0    done (a benchmark that cannot run here is recorded as skipped, with the reason)
      1    the records could not be written
      2    bad command-line usage
      78   the agent configuration (--config, --broker) cannot be used
      130  interrupted (Ctrl-C)
    """
    from ctxscope.agent.calibrate.run import calibrate_run
    from ctxscope.agent.engine.runner import default_device
    from ctxscope.agent.streaming import command_sink

    device = device or default_device()
    with contextlib.ExitStack() as stack:
        sink = command_sink(stack, out, broker, config_path)
        figures = calibrate_run(
            sink, device=device, budget_s=budget_s, tiny=tiny, progress_bar=not no_progress
        )
    for fig in figures:
        if fig.absent:
            click.echo(f"{fig.name:16s} absent: {fig.absent}")
            continue
        median = statistics.median(fig.samples_ms)
        rate = fig.rate(median)
        spread = f"{min(fig.samples_ms):.4g}..{max(fig.samples_ms):.4g}"
        extra = f"  {rate[1]:.4g} {rate[0]}" if rate else ""
        label = " (reference)" if fig.reference else ""
        click.echo(f"{fig.name:16s} {median:.4g} ms [{spread}] x{len(fig.samples_ms)}{extra}{label}")
