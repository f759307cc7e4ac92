"""The Triton autotuner's choices in force in this process, for the record beside each result.

Kernels decorated with `triton.autotune` (mamba_ssm's SSD, chunk-state and state-passing kernels
among them) benchmark every candidate config on the first call with a new key and keep the fastest
for the rest of the process. The choice is made by timing, so two processes can run the same kernel
with different configs at different speeds (results/profiling saw one process run those kernels
1.5-1.8x slower than three others). A result therefore names the config each of its kernels ran with.
"""

from __future__ import annotations

import inspect
import sys
from typing import Any


def triton_autotuner_type() -> type | None:
    """Triton's Autotuner class, or None where Triton is not installed (no choices to record)."""
    try:
        from triton.runtime.autotuner import Autotuner
    except ImportError:
        return None
    return Autotuner


def _plain(value: Any) -> Any:
    """A JSON/msgpack-safe form of a key item or config value (dtype keys are strings already)."""
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)


def _kernel_name(autotuner: Any) -> str:
    """The kernel's Python function by module and name, unwrapped as Triton does it itself:
    Autotuner -> (Heuristics ->) JITFunction -> function, each holding the next in `fn`."""
    function = autotuner
    while not inspect.isfunction(function) and getattr(function, "fn", None) is not None:
        function = function.fn
    return f"{getattr(function, '__module__', '?')}.{getattr(function, '__name__', type(function).__name__)}"


def autotune_choices(autotuner_type: type | None = None) -> list[dict[str, Any]]:
    """Every (kernel, key) -> config choice that an autotuner of any loaded module has made so far,
    sorted by kernel; empty where Triton is absent or nothing was tuned. One autotuner imported into
    several modules is reported once."""
    kind = autotuner_type or triton_autotuner_type()
    if kind is None:
        return []
    seen: set[int] = set()
    choices: list[dict[str, Any]] = []
    for module in list(sys.modules.values()):
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        for value in list(namespace.values()):
            if not issubclass(type(value), kind) or id(value) in seen:
                continue
            seen.add(id(value))
            for key, config in list(value.cache.items()):
                choices.append(
                    {
                        "kernel": _kernel_name(value),
                        "key": [_plain(item) for item in key],
                        "config": {name: _plain(v) for name, v in config.all_kwargs().items()},
                    }
                )
    return sorted(choices, key=lambda choice: (choice["kernel"], str(choice["key"])))
