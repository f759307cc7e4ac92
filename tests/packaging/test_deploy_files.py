"""The deployment files agree with the code: the example config loads, the unit runs a real command."""

from __future__ import annotations

import shlex
from pathlib import Path

from click.testing import CliRunner

from ctxscope.agent.config import load_config
from ctxscope.cli import main

REPO = Path(__file__).resolve().parents[2]


def test_jetson_example_config_is_valid() -> None:
    config = load_config(REPO / "jetson" / "agent.example.toml", environ={})
    assert config.device == "orin-nx-01"
    assert config.resolved_spool_path() == Path("/var/lib/ctxscope/spool.sqlite")


def test_systemd_unit_runs_an_existing_command() -> None:
    unit = (REPO / "jetson" / "ctxscope-agent.service").read_text()
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    argv = shlex.split(exec_start.removeprefix("ExecStart="))
    assert Path(argv[0]).name == "ctxscope"
    result = CliRunner().invoke(main, [*argv[1:3], "--help"])
    assert result.exit_code == 0, result.output
    for option in argv[3::2]:
        assert option in result.output, f"{option} is not an option of `{' '.join(argv[1:3])}`"
