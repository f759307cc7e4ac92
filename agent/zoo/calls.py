"""Evidence of which kernel packages a piece of code actually called.

`CallEvidence` watches every Python call (and every call of a C extension function) made in the current
thread while it is active, and keeps those that enter a watched package: the package, the file inside it
and the function. Transformers has changed several times how its modeling modules bind the mamba_ssm /
causal_conv1d kernels (wrappers made at import, globals loaded in a constructor, modules swapped in by the
`kernels` package); what a forward calls is the one fact that holds across all of them.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

# C extension modules that belong to a kernel package: their functions are called from C, not from a file
EXTENSIONS = {
    "causal_conv1d_cuda": "causal_conv1d",
    "selective_scan_cuda": "mamba_ssm",
}


@dataclass(frozen=True)
class Call:
    """One kernel-package function that was entered: its package, file inside it (or the extension
    module's name) and function name."""

    package: str
    file: str
    function: str


def package_root(package: str) -> str | None:
    """Folder of an installed package, without importing it; None when it is not installed."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return str(Path(next(iter(spec.submodule_search_locations))).resolve())


class CallEvidence:
    """Context manager: the set of calls into `packages` made in this thread while it is active."""

    def __init__(self, packages: tuple[str, ...]) -> None:
        self.packages = packages
        self.calls: set[Call] = set()
        self._roots: list[tuple[str, str]] = []
        self._previous: Any = None

    def __enter__(self) -> CallEvidence:
        self._roots = [
            (root + os.sep, package)
            for package in self.packages
            if (root := package_root(package)) is not None
        ]
        self._previous = sys.getprofile()
        sys.setprofile(self._observe)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.setprofile(self._previous)

    def _observe(self, frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            filename = frame.f_code.co_filename
            for root, package in self._roots:
                if filename.startswith(root):
                    relative = filename[len(root) :].replace(os.sep, "/")
                    self.calls.add(Call(package, relative, frame.f_code.co_name))
                    return
        elif event == "c_call":
            module = getattr(arg, "__module__", None) or ""
            owner = EXTENSIONS.get(module.split(".")[0])
            if owner is not None and owner in self.packages:
                self.calls.add(Call(owner, module, getattr(arg, "__name__", "?")))

    def entered(self, package: str, file: str | None = None) -> bool:
        """Whether any function of `package` (of `file` inside it, when given) was called."""
        return any(c.package == package and (file is None or c.file == file) for c in self.calls)

    def functions(self, package: str, file: str) -> set[str]:
        """Names of the functions of `file` in `package` that were called."""
        return {c.function for c in self.calls if c.package == package and c.file == file}
