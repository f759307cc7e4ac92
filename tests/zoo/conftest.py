"""Fixtures of the zoo tests: tiny variants of every buildable entry, built once per session on CPU."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

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
    """Bytes of the floating-point tensors a transformers cache holds (keys, values, conv and SSM states)."""
    seen: set[int] = set()
    total = 0
    for layer in cache.layers:
        for value in vars(layer).values():
            for tensor in value.values() if isinstance(value, dict) else [value]:
                if torch.is_tensor(tensor) and tensor.is_floating_point() and id(tensor) not in seen:
                    seen.add(id(tensor))
                    total += tensor.numel() * tensor.element_size()
    return total
