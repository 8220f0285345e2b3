"""The layout rule of DEVELOPERS.md as data: which stage may import which, and no import circle.

Every ``boom_merge`` module is read with ``ast``; every import counts, at module level and
inside functions alike (an import hidden in a function still runs, and still ties the two
modules together). A module that imports a stage its own stage may not import (upward or
sideways), a module that is on no stage, and an import circle each fail, naming the modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "boom_merge"

#: module (or package: its submodules too; the longest prefix wins) -> stage
STAGE_OF = {
    "boom_merge": "package",
    "boom_merge._hook": "hook",
    "boom_merge.errors": "errors",
    "boom_merge.cache_dir": "cache",
    "boom_merge.durable": "outputs",
    "boom_merge.outputs": "outputs",
    "boom_merge.merge.checks": "checks",
    "boom_merge.merge.model_class": "checks",
    "boom_merge.model_refs": "models",
    "boom_merge.lineage": "lineage",
    "boom_merge.data": "data",
    "boom_merge.evaluation.corpus": "corpus",
    "boom_merge.training": "training",
    "boom_merge.card": "card",
    "boom_merge.merge": "merge",
    "boom_merge.mergekit_yaml": "mergekit-yaml",
    "boom_merge.evaluation": "evaluation",
    "boom_merge.tune": "tune",
    "boom_merge.incremental": "incremental",
    "boom_merge.inspection": "inspection",
    "boom_merge.hub": "hub",
    "boom_merge.embedded_default": "embedded-default",
    "boom_merge.embedding_base": "base",
    "boom_merge.quickstart": "quickstart",
    "boom_merge.cli": "cli",
}

_SERVICES = {"errors", "cache", "outputs", "models", "lineage"}
#: stage -> the other stages it may import (each stage may import itself). Data flows one way:
#: recipe -> checks -> plan -> mergekit -> head -> lineage -> card (all in ``merge``, which
#: calls ``card``), then tune / incremental, evaluation beside them; cli over everything.
MAY_IMPORT: dict[str, set[str]] = {
    "package": set(),
    "hook": set(),  # imports nothing at start-up; its callbacks are named as strings
    "errors": set(),
    "cache": set(),
    "outputs": {"package", "errors"},
    "checks": {"errors"},
    "models": {"errors", "checks"},
    "lineage": {"errors", "cache", "models"},
    "data": {"errors", "cache", "outputs"},
    "corpus": {"errors", "data"},  # the built corpus' reader: training's dev splits and cards use it
    "training": _SERVICES | {"data", "corpus"},
    "card": _SERVICES | {"corpus", "training"},
    "merge": _SERVICES | {"checks", "training", "card"},
    "mergekit-yaml": {"errors", "merge"},
    "evaluation": _SERVICES | {"data", "corpus"},
    "tune": _SERVICES | {"merge", "evaluation"},
    "incremental": _SERVICES | {"merge", "tune", "corpus"},
    "inspection": _SERVICES | {"checks"},
    "hub": _SERVICES | {"card"},
    "embedded-default": _SERVICES | {"data"},
    "base": _SERVICES,  # writes a base dir that training reads: no import between them
    "quickstart": _SERVICES | {"data", "training", "merge", "tune", "evaluation", "embedded-default"},
    "cli": set(STAGE_OF.values()) - {"hook"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def stage(module: str) -> str | None:
    while module:
        if module in STAGE_OF:
            return STAGE_OF[module]
        module = module.rpartition(".")[0]
    return None


def imports(module: str) -> set[str]:
    """The boom_merge modules ``module`` imports anywhere in its body (packages when no module is named)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], *filter(None, [base])])
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names}
    return {name for name in found if name.split(".")[0] == "boom_merge" and name != module}


def bad_imports() -> list[str]:
    """``importer -> imported (stage -> stage)`` for every import the map does not allow."""
    bad = []
    for module in MODULES:
        own = stage(module)
        for target in sorted(imports(module)):
            other = stage(target)
            if other != own and other not in MAY_IMPORT.get(own, set()):
                bad.append(f"{module} -> {target} ({own} may not import {other})")
    return bad


def circles() -> list[list[str]]:
    """Import circles (strongly connected components of two or more modules), Tarjan's algorithm."""
    graph = {m: {t for t in imports(m) if t in MODULES} for m in MODULES}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_every_module_is_on_the_map() -> None:
    assert len(MODULES) > 50 and "boom_merge.cli" in MODULES
    assert [m for m in MODULES if stage(m) is None] == []
    assert set(MAY_IMPORT) == set(STAGE_OF.values())


def test_no_module_imports_upward_or_sideways() -> None:
    assert bad_imports() == []


def test_no_import_circle_even_inside_functions() -> None:
    assert circles() == []


def test_the_checks_can_fail() -> None:
    """A planted upward import and a planted circle are found (the map is not vacuous)."""
    plant = "boom_merge.lineage.records"
    original = imports

    def planted(module: str) -> set[str]:
        extra = {"boom_merge.merge.pipeline"} if module == plant else set()
        return original(module) | extra

    globals()["imports"] = planted
    try:
        assert any(line.startswith(f"{plant} -> boom_merge.merge.pipeline") for line in bad_imports())
        assert any(plant in circle and "boom_merge.merge.pipeline" in circle for circle in circles())
    finally:
        globals()["imports"] = original


@pytest.mark.parametrize("path", sorted(p for p in MODULES.values() if p.name != "__main__.py"), ids=lambda p: p.relative_to(PACKAGE.parent).as_posix())
def test_docstring_says_what_the_module_owns(path: Path) -> None:
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))) or ""
    assert "Owns" in doc, f"{path.name}: its docstring does not say what it owns ('Owns: ...')"
