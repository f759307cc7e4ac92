"""Unit conversion to one canonical unit per dimension, so samples of one quantity pool correctly."""

from __future__ import annotations

# unit -> (canonical unit, factor that converts a value in `unit` into the canonical unit)
_CANONICAL: dict[str, tuple[str, float]] = {
    "s": ("ms", 1e3),
    "ms": ("ms", 1.0),
    "us": ("ms", 1e-3),
    "ns": ("ms", 1e-6),
    "B": ("MiB", 1 / 2**20),
    "bytes": ("MiB", 1 / 2**20),
    "KiB": ("MiB", 1 / 2**10),
    "MiB": ("MiB", 1.0),
    "MB": ("MiB", 1.0),  # torch's max_memory_allocated "MB" in the reference study means MiB
    "GiB": ("MiB", 2**10),
    "J": ("J", 1.0),
    "mJ": ("J", 1e-3),
    "J/token": ("J/token", 1.0),
    "mJ/token": ("J/token", 1e-3),
    "W": ("W", 1.0),
    "mW": ("W", 1e-3),
}


def canonical(unit: str) -> tuple[str, float]:
    """The canonical unit of `unit` and the factor to multiply values by; unknown units stay as they are."""
    return _CANONICAL.get(unit, (unit, 1.0))
