"""Benchmark scripts under bench/ imported by path for their tests (bench/ is no package)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]


def load_bench(path: str) -> ModuleType:
    """`bench/<path>` as the module `ctxscope_bench_<stem>`, imported once per session and registered
    in `sys.modules` (dataclasses look their module up there); while it loads, its folder is on
    `sys.path` for the sibling scripts it imports, as when it runs."""
    file = REPO / "bench" / path
    name = f"ctxscope_bench_{file.stem}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, str(file.parent))
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    finally:
        sys.path.remove(str(file.parent))
    return module
