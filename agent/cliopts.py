"""Options the agent's measuring commands share.

`--torch-device` is where tensors run (cuda or cpu); `--device` names the fleet's device id in
`agent serve` and `agent status`. The measuring commands once took `--device cuda|cpu`: it is refused
with the new name rather than read as something else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def _renamed(_ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        raise click.BadParameter(
            f"use --torch-device {value} (--device names the fleet's device id in `agent serve` and `status`)"
        )


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
        help="where tensors run (default: cuda when present)",
    )(command)
