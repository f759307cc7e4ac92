"""Fixtures of the telemetry tests: recorded Jetson output and a tegrastats stand-in that replays it."""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
REPLAY = Path(__file__).parent / "replay_tegrastats.py"
BOARDS = ("agx_orin", "orin_nx", "orin_nano")


def tegrastats_lines(board: str) -> list[str]:
    return [line for line in (FIXTURES / f"tegrastats_{board}.txt").read_text().splitlines() if line.strip()]


def replay_command(board: str, interval_ms: int) -> list[str]:
    return [
        sys.executable,
        "-u",
        str(REPLAY),
        str(FIXTURES / f"tegrastats_{board}.txt"),
        "--interval",
        str(interval_ms),
    ]


def load_jtop_dump(path: Path) -> dict[str, Any]:
    """A jtop snapshot from the printed form `# jetson.<property>` followed by `# <repr>`."""
    snap: dict[str, Any] = {}
    key = None
    for line in path.read_text().splitlines():
        text = line.removeprefix("# ").strip()
        if text.startswith("jetson."):
            key = text.removeprefix("jetson.")
        elif text and key is not None:
            try:
                snap[key] = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                snap[key] = text  # nvpmodel prints its bare name, e.g. 25W
            key = None
    return snap


@pytest.fixture
def jtop_orin_nano() -> dict[str, Any]:
    return load_jtop_dump(FIXTURES / "jtop_orin_nano.txt")


@pytest.fixture
def lines_of():
    """Recorded tegrastats lines of a board."""
    return tegrastats_lines


@pytest.fixture
def replay():
    """The command that replays a board's recorded tegrastats lines every `interval_ms`."""
    return replay_command
