"""Options the agent's measuring commands share: the torch device, and where records go.

`--torch-device` is where tensors run (cuda or cpu); `--device` names the fleet's device id in
`agent serve` and `agent status`. The measuring commands once took `--device cuda|cpu`: it is refused
with the new name rather than read as something else.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def _renamed(_ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        raise click.BadParameter(
            f"use --torch-device {value} (--device names the fleet's device id in `agent serve` and `status`)"
        )


def _present(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """cuda asked for where torch sees none: refused before anything runs, not a table of faults."""
    if value == "cuda":
        import torch

        if not torch.cuda.is_available():
            build = "a CPU build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            raise click.BadParameter(
                f"torch {torch.__version__} ({build}) sees no CUDA device here: "
                "use --torch-device cpu, or leave it out"
            )
    return value


def torch_device_option(command: F) -> F:
    """`--torch-device cuda|cpu` as the parameter `device`, and the old `--device` refused by name."""
    command = click.option(
        "--device", "renamed_device", hidden=True, expose_value=False, callback=_renamed, default=None
    )(command)
    return click.option(
        "--torch-device",
        "device",
        type=click.Choice(["cuda", "cpu"]),
        default=None,
        callback=_present,
        help="where tensors run (default: cuda when present)",
    )(command)


def config_option(help_text: str) -> Callable[[F], F]:
    """`--config FILE` (the agent's TOML) as the parameter `config_path`."""
    return click.option(
        "--config",
        "config_path",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        default=None,
        help=help_text,
    )


def identity_options(command: F) -> F:
    """`--config`, `--device` (the fleet's device id) and `--spool`: which agent a command is about."""
    command = click.option(
        "--spool", type=click.Path(dir_okay=False, path_type=Path), help="spool database path"
    )(command)
    command = click.option("--device", help="device id (default: from the config, else the host name)")(
        command
    )
    return config_option(
        "the agent's TOML file (see jetson/agent.example.toml; the service's is /etc/ctxscope/agent.toml); "
        "CTXSCOPE_* variables override it"
    )(command)


def record_options(command: F) -> F:
    """Where a measuring command's records go: `--out FILE` (JSON lines, appended), `--broker HOST:PORT`
    or `--config FILE` (through the spool to the collector), as the parameters `out`, `broker` and
    `config_path` (see `streaming.command_sink`)."""
    command = config_option("agent TOML (device id, broker, spool); implies streaming to its broker")(command)
    command = click.option(
        "--broker",
        default=None,
        help="HOST:PORT: stream the records through the spool to this broker (else: --out / stdout table)",
    )(command)
    return click.option(
        "--out", type=click.Path(dir_okay=False, path_type=Path), help="write records as JSON lines here"
    )(command)


def progress_option(command: F) -> F:
    """`--no-progress` as the parameter `no_progress`: no progress bar on stderr."""
    return click.option("--no-progress", is_flag=True, help="no progress bar on stderr")(command)
