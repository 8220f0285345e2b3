"""Dictionaries in dictd format: FOLDOC (computing) and Ambrose Bierce's Devil's Dictionary.

FOLDOC bodies repeat the headword(s) on the first lines, then an indented definition
with ``<category>`` tags, ``{cross references}`` and a closing ``(YYYY-MM-DD)`` date.
Devil's Dictionary bodies start ``HEADWORD, n.  definition``. Entries that only point
elsewhere (``See Cellular.``, ``Did you mean ASCII?``) are skipped.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from boom_merge.data.corpora.common import Pair, Selector, clean_text
from boom_merge.data.corpora.dictd import DictEntry, read_dictd

_FOLDOC_DATE = re.compile(r"\(\d{4}-\d{2}-\d{2}\)\s*$")
_FOLDOC_CATEGORY = re.compile(r"^\s*(?:<[^>\n]+>\s*)+")
_BRACES = re.compile(r"\{([^{}]*)\}")
_POINTER = re.compile(r"^(?:see|did you mean|do you mean)\b[^.?]*[.?]?$", re.IGNORECASE)
_DEVIL_HEAD = re.compile(r"^[A-Z][A-Z0-9 '.-]*,\s*(?:(?:[a-z]+\.)+\s*)*")


def parse_foldoc(entry: DictEntry) -> tuple[str, str]:
    """Return (headword, definition) of a FOLDOC entry."""
    header, _, text = entry.body.partition("\n\n")
    text = _FOLDOC_CATEGORY.sub("", _FOLDOC_DATE.sub("", text.strip()))
    return header.splitlines()[0].strip(), _BRACES.sub(r"\1", text)


def parse_devil(entry: DictEntry) -> tuple[str, str]:
    """Return (headword, definition) of a Devil's Dictionary entry (``HEAD, n.`` removed)."""
    body = _DEVIL_HEAD.sub("", entry.body, count=1)
    return entry.headwords[0], _BRACES.sub(r"\1", body)


def _read(root: Path, name: str, parse: Callable[[DictEntry], tuple[str, str]]) -> list[Pair]:
    pairs = []
    for entry in read_dictd(root, name):
        headword, definition = parse(entry)
        definition = clean_text(definition)
        if headword and len(definition) > 10 and not _POINTER.match(definition):
            pairs.append(Pair(key=headword, query=headword, doc=definition))
    return pairs


def read_foldoc(root: Path, select: Selector) -> list[Pair]:
    """Pairs (computing term, definition) from FOLDOC."""
    return _read(root, "foldoc", parse_foldoc)


def read_devil(root: Path, select: Selector) -> list[Pair]:
    """Pairs (term, satirical definition) from the Devil's Dictionary."""
    return _read(root, "devil", parse_devil)
