"""Zoo entries: the public architecture configs shipped in `configs/` and the index that names them."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from functools import cache, lru_cache
from importlib import resources
from typing import Any, Literal

Family = Literal["transformer", "ssm", "hybrid"]
Runtime = Literal["mamba_ssm", "transformers"]  # who implements the forward of a loaded model


class ZooError(KeyError):
    """An unknown or unusable zoo entry. The message lists what is there."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class ModelSpec:
    """One zoo entry: a public checkpoint's exact architecture config (never its weights)."""

    name: str
    family: Family
    model_type: str
    checkpoint: str
    config: dict[str, Any] = field(repr=False)
    source: str = ""
    note: str | None = None
    unavailable: str | None = None  # why this entry cannot be built here; None when it can
    tiny: bool = False  # a shrunk variant for CPU tests (see tiny.py)


@lru_cache(maxsize=1)
def _index() -> dict[str, dict[str, Any]]:
    text = resources.files(__package__).joinpath("configs").joinpath("index.json").read_text()
    return dict(json.loads(text)["models"])


@cache
def _config(name: str) -> dict[str, Any]:
    return dict(
        json.loads(resources.files(__package__).joinpath("configs").joinpath(f"{name}.json").read_text())
    )


def list_models(*, include_unavailable: bool = True) -> list[ModelSpec]:
    """Every zoo entry in index order; entries that cannot be built here carry `unavailable`."""
    specs = [get_spec(name) for name in _index()]
    return [s for s in specs if include_unavailable or s.unavailable is None]


def get_spec(name: str) -> ModelSpec:
    """The entry called `name`; ZooError listing the known names otherwise."""
    entry = _index().get(name)
    if entry is None:
        raise ZooError(f"unknown model {name!r}; the zoo has: {', '.join(_index())}")
    unavailable = entry.get("unavailable")
    config = {} if unavailable else copy.deepcopy(_config(name))
    return ModelSpec(
        name=name,
        family=entry["family"],
        model_type=entry["model_type"],
        checkpoint=entry["checkpoint"],
        config=config,
        source=entry["source"],
        note=entry.get("note"),
        unavailable=unavailable,
    )
