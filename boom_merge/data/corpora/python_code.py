"""Python standard library code search: docstring -> function source.

Owns: reading standard-library functions into pairs. It never writes files, never imports the
code it reads, and may not decide the split (:mod:`.common` does).

The ``.py`` files of the running interpreter's standard library are parsed with ``ast``
(test suites, ``site-packages`` and IDLE excluded). Each documented function or method
gives one pair under its qualified name (``json.decoder.JSONDecoder.decode``); the
source is returned without its docstring, so retrieval cannot match the text verbatim.
Docstrings shared by several functions (``Return self==value.``) are kept once.
"""

from __future__ import annotations

import ast
import logging
import sysconfig
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path

from boom_merge.data.corpora.common import Pair, Selector, clean_text

logger = logging.getLogger(__name__)

EXCLUDED_PARTS = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages", "idlelib", "__pycache__"})
MIN_DOCSTRING_CHARS = 30
MAX_SOURCE_CHARS = 2000


def stdlib_root() -> Path:
    """The directory of this interpreter's standard library."""
    return Path(sysconfig.get_paths()["stdlib"])


def module_name(root: Path, path: Path) -> str:
    """``root/json/decoder.py`` -> ``json.decoder``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _functions(tree: ast.AST, prefix: str) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """(qualified name, node) of functions and methods, classes descended into."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield f"{prefix}.{node.name}", node
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, f"{prefix}.{node.name}")


def without_docstring(source_lines: list[str], node: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    """The function's source with its docstring statement cut out."""
    doc = node.body[0]
    first, last = node.lineno - 1 - len(node.decorator_list), node.end_lineno
    lines = source_lines[first : doc.lineno - 1] + source_lines[doc.end_lineno : last]
    return textwrap.dedent("\n".join(lines)).rstrip()


def functions_of(root: Path, path: Path) -> Iterator[Pair]:
    """Pairs (docstring, source) of the documented functions in one file."""
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            tree = ast.parse(text)
    except SyntaxError:
        logger.info("skipping %s: not parseable by this Python", path)
        return
    lines = text.splitlines()
    for name, node in _functions(tree, module_name(root, path)):
        docstring = ast.get_docstring(node)
        if docstring and len(docstring) >= MIN_DOCSTRING_CHARS and len(node.body) > 1:
            source = without_docstring(lines, node)
            yield Pair(key=name, query=clean_text(docstring), doc=source[:MAX_SOURCE_CHARS])


def read_python_code(root: Path, select: Selector) -> list[Pair]:
    """Pairs (docstring, function source) for the standard library under ``root``."""
    pairs, seen = [], set()
    for path in sorted(root.rglob("*.py")):
        if EXCLUDED_PARTS.isdisjoint(path.relative_to(root).parts):
            for pair in functions_of(root, path):
                if pair.query not in seen:
                    seen.add(pair.query)
                    pairs.append(pair)
    return pairs
