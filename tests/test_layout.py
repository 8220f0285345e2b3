"""The layout rule of DEVELOPERS.md: every module's docstring says what it owns and what it may not touch."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "boom_merge"
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__main__.py")


def test_the_package_has_modules() -> None:
    assert len(MODULES) > 50 and PACKAGE / "cli" / "__init__.py" in MODULES


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.relative_to(PACKAGE.parent).as_posix())
def test_docstring_says_what_the_module_owns_and_may_not_touch(path: Path) -> None:
    name = path.relative_to(PACKAGE.parent).as_posix()
    doc = " ".join((ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))) or "").split())
    assert "Owns" in doc, f"{name}: its docstring does not say what it owns ('Owns: ...')"
    assert "may not" in doc or "never" in doc, f"{name}: its docstring does not say what it may not touch"
