"""Where a transformers model keeps its cache: the output field that returns it and the forward keyword
that takes it back. Both were renamed across transformers 5.x (`past_key_values`, `cache_params`,
`cache`), so they are looked up, never assumed."""

from __future__ import annotations

import inspect
from typing import Any

import torch

_CACHE_OUTPUT_FIELDS = ("past_key_values", "cache", "cache_params")


def hf_cache(output: Any) -> Any:
    """The cache object a transformers forward returned (None when it returned none)."""
    for name in _CACHE_OUTPUT_FIELDS:
        value = getattr(output, name, None)
        if value is not None:
            return value
    return None


def hf_cache_kwarg(module: torch.nn.Module) -> str:
    """The keyword under which `module.forward` takes a cache back."""
    params = inspect.signature(module.forward).parameters
    for name in ("cache_params", "past_key_values", "cache"):
        if name in params:
            return name
    raise TypeError(f"{type(module).__name__}.forward takes no cache argument")
