"""Bible verse pairs, King James Version -> World English Bible (paraphrase, archaic -> modern).

Owns: reading the KJV and WEB verses into pairs. It never writes files and may not decide the
split (:mod:`.common` does).

Both texts come from Debian's SWORD modules (``sword-text-kjv``, ``sword-text-web``),
read with PyPI ``pysword`` (Debian's ``python3-sword`` binds only the system Python).
Verses carry OSIS markup: footnotes and headings are replaced by a space *before* the
tags are stripped, because ``pysword``'s clean mode glues the words around them.
The headword is the verse reference (``Genesis 1:1``); only selected verses are read.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from boom_merge.data.corpora.common import Pair, Selector, clean_text

KJV, WEB = "engKJV2006eb", "engWEB2015eb"
_DROPPED = re.compile(r"<(note|title)\b[^>]*>.*?</\1>", re.DOTALL)
_TAG = re.compile(r"<[^>]*>")


def osis_to_text(markup: str) -> str:
    """Plain text of an OSIS verse: notes and titles dropped, tags removed, spaces kept."""
    return clean_text(_TAG.sub("", _DROPPED.sub(" ", markup)).replace("¶", " "))


def _references(bible) -> Iterator[tuple[str, str, int, int]]:
    """(reference, OSIS book, chapter, verse) for every verse of ``bible``'s structure."""
    for books in bible.get_structure().get_books().values():
        for book in books:
            for chapter, length in enumerate(book.chapter_lengths, 1):
                for verse in range(1, length + 1):
                    yield f"{book.name} {chapter}:{verse}", book.osis_name, chapter, verse


def _verse(bible, book: str, chapter: int, verse: int) -> str:
    try:
        return osis_to_text(bible.get(books=[book], chapters=[chapter], verses=[verse], clean=False))
    except ValueError:  # the other versification lacks this verse
        return ""


def read_bible(root: Path, select: Selector) -> list[Pair]:
    """Pairs (KJV verse, WEB verse) for the selected references present in both."""
    from pysword.modules import SwordModules

    modules = SwordModules(str(root))
    modules.parse_modules()
    kjv, web = modules.get_bible_from_module(KJV), modules.get_bible_from_module(WEB)
    references = list(_references(kjv))
    wanted = select(ref for ref, *_ in references)
    pairs = []
    for ref, book, chapter, verse in references:
        if ref in wanted:
            old, new = _verse(kjv, book, chapter, verse), _verse(web, book, chapter, verse)
            if old and new:
                pairs.append(Pair(key=ref, query=old, doc=new))
    return pairs
