"""Where ctxscope keeps state on this machine (spools, the collector's default store, the demo)."""

from __future__ import annotations

import os
from pathlib import Path


def state_dir() -> Path:
    """The per-user state directory: $XDG_STATE_HOME/ctxscope, else ~/.local/state/ctxscope."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "ctxscope"


def demo_dir() -> Path:
    """`ctxscope demo`'s default work folder: its store, agent spool and agent log."""
    return state_dir() / "demo"
