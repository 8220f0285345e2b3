"""Python library reference (Debian ``python3-doc``): signature -> description.

Owns: reading the library reference's directives into pairs. It never writes files and may not
decide the split (:mod:`.common` does).

The reStructuredText sources of the library reference (``html/_sources/library/*.rst.txt``)
document each function, method and class with a directive (``.. function:: dumps(obj,
*, ...)``) followed by an indented description. Each gives one pair under its qualified
name (``json.dumps``, ``json.JSONDecoder.decode``: the current ``module`` and any enclosing
``class`` directive): the signature as query, the first part of the description (up to a
nested directive such as ``versionchanged``) as document, markup reduced to plain text.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from boom_merge.data.corpora.common import Pair, Selector
from boom_merge.data.corpora.python_faq import rst_to_text

API_GLOB = "python3*/html/_sources/library/*.rst.txt"
_KINDS = "function|method|classmethod|staticmethod|class|exception|decorator|coroutinefunction|coroutinemethod"
_OBJECT = re.compile(rf"^(?P<indent> *)\.\. (?:py:)?(?P<kind>{_KINDS})::\s*(?P<signature>.+)$")
_MODULE = re.compile(r"^\.\. (?:py:)?(?:current)?module::\s*(?P<module>\S+)")
_NAME = re.compile(r"^[\w.]+")
MIN_DESCRIPTION_CHARS = 20


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _block(lines: list[str], start: int, indent: int) -> int:
    """Index of the first line after ``start`` that is not blank and indented at most ``indent``."""
    end = start
    while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > indent):
        end += 1
    return end


def _description(body: list[str]) -> str:
    """Text of a directive body after its head (more signatures, options) up to a nested directive."""
    start = next((n for n, line in enumerate(body) if not line.strip()), len(body))
    kept = []
    for line in body[start:]:
        if line.strip().startswith(".. "):
            break
        kept.append(line)
    return rst_to_text("\n".join(kept))


def objects(rst: str) -> Iterator[tuple[str, str, str]]:
    """(qualified name, signature, description) of each documented object of one document."""
    lines = rst.splitlines()
    module: str | None = None
    classes: list[tuple[int, str]] = []  # (indent, qualified name) of enclosing class directives
    for number, line in enumerate(lines):
        if found := _MODULE.match(line):
            module, classes = found["module"], []
            continue
        match = _OBJECT.match(line)
        if match is None or (name := _NAME.match(match["signature"])) is None:
            continue
        indent, signature = len(match["indent"]), match["signature"].strip()
        following = number + 1
        while signature.endswith("\\") and following < len(lines):
            signature = signature[:-1].rstrip() + " " + lines[following].strip()
            following += 1
        classes = [(depth, qualified) for depth, qualified in classes if depth < indent]
        bare = name.group(0)
        if classes and "." not in bare:
            qualified = f"{classes[-1][1]}.{bare}"
        elif module and not bare.startswith(f"{module}."):
            qualified = f"{module}.{bare}"
        else:
            qualified = bare
        if match["kind"] in ("class", "exception"):
            classes.append((indent, qualified))
        description = _description(lines[following : _block(lines, following, indent)])
        yield qualified, qualified + signature[len(bare) :], description


def read_python_api(root: Path, select: Selector) -> list[Pair]:
    """Pairs (signature, description) from every library reference document under ``root``."""
    pairs = []
    for path in sorted({path.resolve() for path in root.glob(API_GLOB)}):
        for qualified, signature, description in objects(path.read_text(encoding="utf-8")):
            if len(description) >= MIN_DESCRIPTION_CHARS:
                pairs.append(Pair(key=qualified, query=signature, doc=description))
    return pairs
