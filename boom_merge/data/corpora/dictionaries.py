"""Dictionaries in dictd format: FOLDOC, the Devil's Dictionary, the Jargon File, VERA, GCIDE.

Owns: the body formats of the dictd dictionaries (FOLDOC, Devil's Dictionary, Jargon File, VERA,
GCIDE). It never reads the dictd files itself (:mod:`.dictd` does), never writes and may not
decide the split.

FOLDOC bodies repeat the headword(s) on the first lines, then an indented definition
with ``<category>`` tags, ``{cross references}`` and a closing ``(YYYY-MM-DD)`` date.
Devil's Dictionary bodies start ``HEADWORD, n.  definition``. Jargon File bodies are the
headword, a part-of-speech line, a blank line and the definition. VERA bodies are an
acronym and one expansion (an acronym has one entry per expansion). GCIDE bodies start
``Head \\Head\\ (pron.), pos. [etymology]`` and end each sense with a source tag; only
the first sense of entries from Webster's 1913 is kept (the ``[WordNet 1.5]`` entries
repeat WordNet). Entries that only point elsewhere (``See Cellular.``, ``Did you mean
ASCII?``) are skipped.
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
_WEBSTER = "[1913 Webster]"
_GCIDE_SENSE = re.compile(r"^\s*1\.\s+")
_GCIDE_CITATION = re.compile(r"\s--\s?[A-Z][\w.' ]*$")
_GCIDE_MARKUP = re.compile(r"\[[a-z]?[=^`'\"~.,]+[a-z]?\]|\[[a-z]+[=^`'\"~][a-z]*\]")


def parse_foldoc(entry: DictEntry) -> tuple[str, str]:
    """Return (headword, definition) of a FOLDOC entry."""
    header, _, text = entry.body.partition("\n\n")
    text = _FOLDOC_CATEGORY.sub("", _FOLDOC_DATE.sub("", text.strip()))
    return header.splitlines()[0].strip(), _BRACES.sub(r"\1", text)


def parse_devil(entry: DictEntry) -> tuple[str, str]:
    """Return (headword, definition) of a Devil's Dictionary entry (``HEAD, n.`` removed)."""
    body = _DEVIL_HEAD.sub("", entry.body, count=1)
    return entry.headwords[0], _BRACES.sub(r"\1", body)


def parse_jargon(entry: DictEntry) -> tuple[str, str]:
    """Return (headword, definition) of a Jargon File entry (the part-of-speech line removed)."""
    header, _, text = entry.body.partition("\n\n")
    return header.splitlines()[0].strip(), _BRACES.sub(r"\1", text)


def parse_vera(entry: DictEntry) -> tuple[str, str]:
    """Return (acronym, expansion) of a VERA entry."""
    acronym, _, expansion = entry.body.strip().partition("\n")
    return acronym.strip(), expansion


def parse_gcide(entry: DictEntry) -> tuple[str, str]:
    """Return (headword, first sense) of a Webster 1913 GCIDE entry; ("", "") for other entries."""
    body = entry.body
    if _WEBSTER not in body or "[WordNet" in body:
        return "", ""
    header, *lines = body[: body.index(_WEBSTER)].splitlines()
    if header.count("[") > header.count("]"):  # the etymology goes on: skip to its end
        closing = next((n for n, line in enumerate(lines) if "]" in line), len(lines))
        lines = lines[closing + 1 :]
    text = _GCIDE_SENSE.sub("", " ".join(line.strip() for line in lines))
    text = _GCIDE_MARKUP.sub("", _GCIDE_CITATION.sub("", text))
    return header.split(" \\", 1)[0].strip(), _BRACES.sub(r"\1", text)


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


def read_jargon(root: Path, select: Selector) -> list[Pair]:
    """Pairs (hacker slang term, definition) from the Jargon File."""
    return _read(root, "jargon", parse_jargon)


def read_vera(root: Path, select: Selector) -> list[Pair]:
    """Pairs (acronym, expansion) from VERA; an acronym with several expansions has several documents."""
    return _read(root, "vera", parse_vera)


def read_gcide(root: Path, select: Selector) -> list[Pair]:
    """Pairs (term, first Webster 1913 sense) from GCIDE."""
    return _read(root, "gcide", parse_gcide)
