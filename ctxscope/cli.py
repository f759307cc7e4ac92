"""The `ctxscope` console script: groups `agent` and `collector`, commands `demo` and `report`.

Subcommand modules are imported lazily so that `ctxscope agent ...` on a device never imports the
collector's web stack, and `--help` stays fast.
"""

from __future__ import annotations

import importlib

import click

from ctxscope import __version__

LAZY_COMMANDS: dict[str, tuple[str, str, str]] = {
    "agent": ("ctxscope.agent.cli", "agent", "Device side: run sweeps, list models, serve headless."),
    "collector": ("ctxscope.collector.cli", "collector", "Host side: ingest, store, dashboard, watch."),
    "demo": ("ctxscope.demo", "demo", "Broker + collector + a local agent, live in the terminal."),
    "report": ("ctxscope.collector.report", "report", "Static HTML report with figures and exports."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        available = [name for name, (module, _, _) in LAZY_COMMANDS.items() if _module_exists(module)]
        return sorted(set(super().list_commands(ctx)) | set(available))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in LAZY_COMMANDS:
            module_name, attribute, _ = LAZY_COMMANDS[cmd_name]
            return getattr(importlib.import_module(module_name), attribute)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, LAZY_COMMANDS[name][2]) for name in self.list_commands(ctx) if name in LAZY_COMMANDS]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _module_exists(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@click.group(cls=LazyGroup)
@click.version_option(__version__, prog_name="ctxscope")
def main() -> None:
    """ctxscope: long-context inference characterization for edge and desktop GPUs."""
