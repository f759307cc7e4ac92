"""Memory of a point: measured peak split into weights, cache/state, logits and activations, plus
the analytic figures from the model's config.

Measured figures come from the CUDA caching allocator (`torch.cuda.max_memory_allocated` after a
reset) and from the sizes of the tensors that hold the cache and the logits. On a CPU the
allocator figures do not exist: peak and activations are then absent, while tensor sizes and the
analytic figures are still given.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from ctxscope.shared.messages import Metric

_MAX_DEPTH = 6


def tensors_in(obj: Any, depth: int = 0) -> Iterator[torch.Tensor]:
    """Every tensor reachable from a cache object (lists, tuples, dicts, plain attributes)."""
    if depth > _MAX_DEPTH or isinstance(obj, torch.nn.Module):
        return
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from tensors_in(value, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from tensors_in(value, depth + 1)
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        for value in vars(obj).values():
            yield from tensors_in(value, depth + 1)


def tensor_bytes(obj: Any, *, floating_only: bool = False) -> int:
    """Bytes of the distinct storages reachable from `obj`; views of one storage count once."""
    seen: dict[int, int] = {}
    for tensor in tensors_in(obj):
        if floating_only and not tensor.is_floating_point():
            continue
        storage = tensor.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def cache_bytes(cache: Any) -> int:
    """Bytes of the state a cache holds: its floating-point tensors (keys, values, conv and SSM states).

    Integer bookkeeping (position and length counters, 8 bytes per layer in transformers 5.25's linear
    attention layers, none in 5.20) is left out, so that the figure is the state the config determines
    and compares exactly with the analytic size, whatever the transformers version.
    """
    return tensor_bytes(cache, floating_only=True)


@dataclass
class MemorySplit:
    """Measured bytes of one prefill; `None` where the device cannot measure it."""

    weights_bytes: int | None
    cache_bytes: int
    logits_bytes: int
    peak_bytes: int | None
    logits_dtype: torch.dtype

    @property
    def activations_bytes(self) -> int | None:
        if self.peak_bytes is None or self.weights_bytes is None:
            return None
        return max(self.peak_bytes - self.weights_bytes - self.cache_bytes - self.logits_bytes, 0)


def measured_metrics(split: MemorySplit, prefix: str = "memory") -> dict[str, Metric]:
    allocator = "torch.cuda.max_memory_allocated after reset_peak_memory_stats, one prefill"
    values: dict[str, tuple[int | None, str]] = {
        "peak": (split.peak_bytes, allocator),
        "weights": (split.weights_bytes, "torch.cuda.memory_allocated after loading the model"),
        "cache": (
            split.cache_bytes,
            "storage bytes of the floating-point cache/state tensors after prefill"
            " (integer counters left out)",
        ),
        "logits": (split.logits_bytes, "bytes of the logits tensor of the prefill"),
        "activations": (split.activations_bytes, "peak - weights - cache - logits"),
    }
    return {
        f"{prefix}_{name}": Metric(unit="B", method=method, samples=[float(value)])
        for name, (value, method) in values.items()
        if value is not None
    }


def analytic_metrics(
    *,
    weight_bytes: int,
    cache_bytes_per_token: int,
    state_bytes: int,
    context_len: int,
    logits_positions: int,
    vocab_size: int,
    logits_dtype: torch.dtype,
) -> dict[str, Metric]:
    """Bytes from the config: weights, KV cache + SSM state at this length, logits."""
    logits = logits_positions * vocab_size * torch.empty((), dtype=logits_dtype).element_size()
    cache = cache_bytes_per_token * context_len + state_bytes
    return {
        "memory_weights_analytic": Metric(
            unit="B", method="analytic: parameters x dtype bytes", samples=[float(weight_bytes)]
        ),
        "memory_cache_analytic": Metric(
            unit="B",
            method="analytic: cache bytes/token x context + SSM state bytes (zoo, from the config)",
            samples=[float(cache)],
        ),
        "memory_logits_analytic": Metric(
            unit="B", method="analytic: positions x vocab x logits dtype bytes", samples=[float(logits)]
        ),
    }


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def allocated(device: torch.device) -> int | None:
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else None


def peak(device: torch.device) -> int | None:
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device)
