"""Fixtures of the zoo tests: tiny variants of every buildable entry, built once per session on CPU."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from ctxscope.agent.engine import memory
from ctxscope.agent.zoo import LoadedModel, list_models, load_model, tiny_spec

BUILDABLE = [spec.name for spec in list_models(include_unavailable=False)]


@pytest.fixture(scope="session")
def tiny_model() -> Callable[[str], LoadedModel]:
    built: dict[str, LoadedModel] = {}

    def get(name: str) -> LoadedModel:
        if name not in built:
            torch.manual_seed(0)
            built[name] = load_model(tiny_spec(name), device="cpu", dtype=torch.float32)
        return built[name]

    return get


def cache_tensor_bytes(cache: Any) -> int:
    """Bytes of the floating-point tensors a transformers cache holds (keys, values, conv and SSM states),
    whatever the cache class of this transformers version."""
    return memory.cache_bytes(cache)
