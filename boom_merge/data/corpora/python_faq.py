"""Python FAQ (Debian ``python3-doc``): question -> answer.

Owns: reading the FAQ's questions and answers into pairs, and the Sphinx markup reduction that
:mod:`.python_api` reuses. It never writes files and may not decide the split (:mod:`.common`
does).

The reStructuredText sources of the FAQ (``html/_sources/faq/*.rst.txt``) are split at
section headings (a line underlined with ``-``, ``=``, ``~`` or ``^``); each heading that
is a question becomes one pair with the text up to the next heading as its answer.
Sphinx roles (``:func:`x```), links and directives are reduced to their plain text.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from boom_merge.data.corpora.common import Pair, Selector, clean_text

FAQ_GLOB = "python3*/html/_sources/faq/*.rst.txt"
_UNDERLINE = re.compile(r"^([-=~^*])\1{2,}\s*$")
_PEP = re.compile(r":pep:`(\d+)`")
_ROLE = re.compile(r":[\w:.-]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`")
_LINK = re.compile(r"`([^`<]+?)\s*<[^>]*>`_+")
_LITERAL = re.compile(r"``([^`]+)``")
_DIRECTIVE = re.compile(r"^\s*\.\. [^\n]*$", re.MULTILINE)


def rst_to_text(rst: str) -> str:
    """Plain text of a reStructuredText fragment (roles, links, literals, directives)."""
    text = _DIRECTIVE.sub("", rst)
    text = _PEP.sub(r"PEP \1", text)
    text = _ROLE.sub(r"\1", text)
    text = _LINK.sub(r"\1", text)
    text = _LITERAL.sub(r"\1", text)
    return clean_text(text.replace("::", ":"))


def sections(rst: str) -> Iterator[tuple[str, str]]:
    """(heading, body) of each underlined section of one document."""
    lines = rst.splitlines()
    starts = [
        i
        for i in range(len(lines) - 1)
        if lines[i].strip() and _UNDERLINE.match(lines[i + 1]) and len(lines[i + 1].strip()) >= len(lines[i].strip())
    ]
    for number, start in enumerate(starts):
        end = starts[number + 1] if number + 1 < len(starts) else len(lines)
        yield rst_to_text(lines[start]), "\n".join(lines[start + 2 : end])


def read_python_faq(root: Path, select: Selector) -> list[Pair]:
    """Pairs (question, answer) from every FAQ document found under ``root``."""
    pairs = []
    for path in sorted({path.resolve() for path in root.glob(FAQ_GLOB)}):
        for heading, body in sections(path.read_text(encoding="utf-8")):
            answer = rst_to_text(body)
            if heading.endswith("?") and len(answer) > 20:
                pairs.append(Pair(key=heading, query=heading, doc=answer))
    return pairs
