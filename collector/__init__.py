"""Host side: ingest, store, aggregation, web dashboard, terminal view and reports.

`load(url)` returns a store's results as a pandas DataFrame (the `analysis` extra).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ctxscope.collector.analysis import load

__all__ = ["load"]


def __getattr__(name: str) -> Any:
    # Imported on first use: the collector's commands must not pay for pandas or aggregation.
    if name == "load":
        from ctxscope.collector.analysis import load

        return load
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
