"""The `ctxscope` console script: groups `agent` and `collector`, commands `demo` and `report`.

Conventions every command shares, set here once: `-h` and `--help`; `--log-level` for ctxscope's and
third-party loggers, with Python warnings (transformers, torch) routed through logging to stderr, so
stdout carries only results; full-width output when stdout is piped (rich tables otherwise cut at 80
columns); exit codes listed in `ctxscope --help`.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import click

from ctxscope import __version__
from ctxscope.lazycli import LazyGroup

COMMANDS = {
    "agent": ("ctxscope.agent.cli", "agent", "Device side: run sweeps, list models, serve headless."),
    "collector": ("ctxscope.collector.cli", "collector", "Host side: ingest, store, dashboard, watch."),
    "demo": ("ctxscope.demo", "demo", "Broker + collector + a local agent, live in the terminal."),
    "report": ("ctxscope.collector.report", "report", "Static HTML report with figures and exports."),
}
LOG_LEVELS = ("debug", "info", "warning", "error")
INTERRUPTED = 130  # the exit status of a command stopped by Ctrl-C (SIGINT)
# Width for rich output when stdout is a pipe or a file: wide enough that no table column is cut.
PIPED_COLUMNS = "250"

EXIT_CODES = f"""\b
Exit codes:
  0    success
  1    error (the message says why: unreachable broker or store, refused plan, ...)
  2    usage error (unknown option, bad argument)
  3    done, but some input was skipped (e.g. bad lines in `collector import`)
  78   the agent's configuration cannot be used (--config, --broker, CTXSCOPE_*)
  {INTERRUPTED}  interrupted (Ctrl-C)
"""


class RootGroup(LazyGroup):
    """The `ctxscope` group: an interrupt (Ctrl-C) in any command exits 130, as `ctxscope -h` and the
    shells' convention (128 + SIGINT) say; click's standalone mode would print "Aborted!" and exit 1,
    which reads as a failed command."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("\nInterrupted.", err=True)
            raise click.exceptions.Exit(INTERRUPTED) from None


def configure_output(log_level: str | None) -> None:
    """Python warnings through logging (stderr), wide output when piped; with `log_level`, logging to
    stderr at that level for ctxscope and every library (else each command keeps its own default)."""
    logging.captureWarnings(True)
    # transformers reads its verbosity once, at import, from this variable; its per-call advice
    # would otherwise repeat on every model command (what ran is recorded in each result anyway).
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", log_level or "error")
    if log_level is not None:
        level = getattr(logging, log_level.upper())
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        logging.getLogger().setLevel(level)
    if not sys.stdout.isatty():
        os.environ.setdefault("COLUMNS", PIPED_COLUMNS)


@click.group(
    cls=RootGroup,
    lazy_commands=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=EXIT_CODES,
)
@click.version_option(__version__, prog_name="ctxscope")
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default=None,
    envvar="CTXSCOPE_LOG_LEVEL",
    help="log level of ctxscope and the libraries it uses; logs and warnings go to stderr"
    " [default: warning; info for `collector run`]",
)
def main(log_level: str | None) -> None:
    """ctxscope: long-context inference characterization for edge and desktop GPUs."""
    configure_output(log_level.lower() if log_level else None)
