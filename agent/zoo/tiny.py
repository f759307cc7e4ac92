"""Shrunk variants of zoo entries for CPU tests: same model_type, layer kinds and loader path, tiny widths.

Each architecture's shrink (shrink.py) is looked up in its registry entry (architectures.py)."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from ctxscope.agent.zoo.architectures import architecture
from ctxscope.agent.zoo.shrink import TINY_VOCAB
from ctxscope.agent.zoo.spec import ModelSpec, ZooError, get_spec

_TOKEN_ID_KEYS = ("pad_token_id", "bos_token_id", "eos_token_id")


def _within_vocab(config: dict[str, Any]) -> dict[str, Any]:
    if "d_model" in config:
        return config
    config["vocab_size"] = TINY_VOCAB
    for key in _TOKEN_ID_KEYS:
        value = config.get(key)
        if isinstance(value, int) and value >= TINY_VOCAB:
            config[key] = TINY_VOCAB - 1
        elif isinstance(value, list):
            config[key] = [min(v, TINY_VOCAB - 1) for v in value]
    return config


def tiny_spec(name_or_spec: str | ModelSpec) -> ModelSpec:
    """The entry shrunk to a few layers and small widths, for CPU tests of the same loader path."""
    spec = get_spec(name_or_spec) if isinstance(name_or_spec, str) else name_or_spec
    if spec.unavailable:
        raise ZooError(f"{spec.name} is unavailable: {spec.unavailable}")
    config = _within_vocab(architecture(spec.model_type).shrink(copy.deepcopy(spec.config)))
    return dataclasses.replace(spec, name=f"{spec.name}-tiny", config=config, tiny=True)


def spec_for(name: str, *, tiny: bool) -> ModelSpec:
    """The entry as a plan or a command names it: the shrunk variant when `tiny`, else the real one."""
    return tiny_spec(name) if tiny else get_spec(name)
