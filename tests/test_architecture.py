"""The import graph keeps the rooms apart: agent and collector meet only in shared/, shared/ depends on
neither, the light agent path never loads the web stack, the collector's read model never imports its
web app, and no modules import each other in a circle.

Imports are read from the source (module level and inside functions alike), so a lazy import that
closes a circle counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOMS = {"agent": "ctxscope.agent", "collector": "ctxscope.collector", "shared": "ctxscope.shared"}


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in {**ROOMS, "ctxscope": "ctxscope"}.items():
        for path in (REPO / folder).rglob("*.py"):
            parts = [p for p in path.relative_to(REPO / folder).with_suffix("").parts if p != "__init__"]
            found[".".join([package, *parts])] = path
    return found


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The module of ours that an imported name lives in (a package's __init__ for a package)."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name if name in MODULES else None


def _imports(module: str) -> set[str]:
    tree = ast.parse(MODULES[module].read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {
        target for n in names if n.startswith("ctxscope") and (target := _resolve(n)) and target != module
    }


GRAPH = {module: _imports(module) for module in MODULES}


def _room(module: str) -> str | None:
    return next((room for room, package in ROOMS.items() if module.startswith(package + ".")), None)


@pytest.mark.parametrize(("source", "forbidden"), [("agent", "collector"), ("collector", "agent")])
def test_agent_and_collector_never_import_each_other(source: str, forbidden: str) -> None:
    crossing = sorted(
        (m, t) for m, targets in GRAPH.items() if _room(m) == source for t in targets if _room(t) == forbidden
    )
    assert crossing == []


def test_shared_depends_on_neither_side() -> None:
    leaving = sorted(
        (m, t)
        for m, targets in GRAPH.items()
        if _room(m) == "shared"
        for t in targets
        if _room(t) != "shared"
    )
    assert leaving == []


def test_the_read_model_never_imports_the_web_app() -> None:
    """collector.web renders the read model (views, figures, traces); the read model, which the report
    and the terminal view also use, does not depend on the web app."""
    reaching = sorted(
        (m, t)
        for m, targets in GRAPH.items()
        if m.startswith("ctxscope.collector.readmodel")
        for t in targets
        if t.startswith("ctxscope.collector.web")
    )
    assert reaching == []
    assert any(t.startswith("ctxscope.collector.readmodel") for t in GRAPH["ctxscope.collector.web.app"])


def test_no_import_cycles() -> None:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(module: str) -> None:  # Tarjan's strongly connected components
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in GRAPH[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in GRAPH:
        if module not in index:
            visit(module)
    assert cycles == []


# Test folders that test no one code folder: the whole pipeline, the install and deploy files, the bench.
CROSS_CUTTING = {"e2e", "packaging", "deploy", "bench"}


def test_the_tests_mirror_the_code() -> None:
    """Every test folder is a code folder's twin (tests/agent/engine/ for agent/engine/, ...), or one of
    the few that test across the code."""
    tests = REPO / "tests"
    strays = []
    for folder in sorted(p for p in tests.rglob("*") if p.is_dir() and not p.name.startswith(("_", "."))):
        relative = folder.relative_to(tests)
        if relative.parts[0] in CROSS_CUTTING or "fixtures" in relative.parts:
            continue
        if not (REPO / relative).is_dir():
            strays.append(str(relative))
    assert strays == [], f"test folders without a code folder of the same path: {strays}"
