"""Run plans shipped with ctxscope (TOML files of the engine's `plans` package) for the device page."""

from __future__ import annotations

from importlib import resources

PLANS_PACKAGE = "ctxscope.agent.engine.plans"


def shipped() -> dict[str, str]:
    """Plan name (file stem) -> TOML text; empty when the package ships none."""
    try:
        folder = resources.files(PLANS_PACKAGE)
    except ModuleNotFoundError:
        return {}
    return {
        entry.name.removesuffix(".toml"): entry.read_text(encoding="utf-8")
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".toml")
    }
