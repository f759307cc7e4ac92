"""The reference study's published figures (package data), as overlay series for the device page."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

RESOURCE = "reference_ssm_scope.json"


@cache
def reference() -> dict[str, Any]:
    """The copied figures of arXiv 2507.12442; `source` says where they come from."""
    return json.loads(resources.files(__package__).joinpath(RESOURCE).read_text(encoding="utf-8"))


def overlay(metric: str) -> dict[str, Any] | None:
    """{device, unit, method, values: {model: {length: value}}} for a metric the study reported."""
    return reference()["series"].get(metric)


def max_context(model: str) -> dict[str, int]:
    """The study's maximum context per device for a model (absent where it did not report one)."""
    table = reference()["max_context_tokens"]
    return {device: by_model[model] for device, by_model in table.items() if model in by_model}
