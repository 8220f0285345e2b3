"""WordNet 3.0 (Debian ``wordnet-base``): head lemma of a synset -> its definition.

Owns: reading WordNet synsets into pairs. It never writes files and may not decide the split
(:mod:`.common` does).

``data.{noun,verb,adj,adv}`` hold one synset a line: offset, lexicographer file, type,
word count (hex), then word/lex-id pairs, pointers, and ``| gloss``. The gloss is the
definition followed by quoted examples; only the definition is kept. Each synset gives
one pair under its first lemma, so a synset's text is never split across train and test.
"""

from __future__ import annotations

import re
from pathlib import Path

from boom_merge.data.corpora.common import Pair, Selector, clean_text

PARTS = ("noun", "verb", "adj", "adv")
_ADJ_MARKER = re.compile(r"\((?:a|p|ip)\)$")


def parse_synset_line(line: str) -> tuple[list[str], str] | None:
    """Return (lemmas, definition) of one ``data.*`` line, or None for licence lines."""
    if line.startswith(" ") or "|" not in line:
        return None
    head, gloss = line.split("|", 1)
    fields = head.split()
    count = int(fields[3], 16)
    lemmas = [_ADJ_MARKER.sub("", w).replace("_", " ") for w in fields[4 : 4 + 2 * count : 2]]
    definition = gloss.split('"', 1)[0].strip().rstrip(";").strip()
    return lemmas, definition


def read_wordnet(root: Path, select: Selector) -> list[Pair]:
    """Pairs (head lemma, definition) for every synset of the four parts of speech."""
    pairs = []
    for part in PARTS:
        with (root / f"data.{part}").open(encoding="utf-8") as lines:
            for line in lines:
                parsed = parse_synset_line(line)
                if parsed and parsed[1]:
                    lemma = parsed[0][0]
                    pairs.append(Pair(key=lemma, query=lemma, doc=clean_text(parsed[1])))
    return pairs
