"""Read dictd dictionaries (``NAME.index`` + ``NAME.dict.dz``), as Debian's dict-* install them.

Owns: the dictd file format (index and ``.dict.dz``). It never interprets an entry's text
(:mod:`.dictionaries` does) and never writes.

Index lines are ``headword<TAB>offset<TAB>length`` with offset and length written in
base64 digits (``A-Za-z0-9+/``, most significant first); the entry is that byte range
of the gunzipped ``.dict.dz``. Several headwords may point at one entry (FOLDOC's
``tts`` and ``Text To Speech``): :func:`read_dictd` yields each entry once.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from boom_merge.errors import BoomError

_B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}


@dataclass(frozen=True)
class DictEntry:
    """One dictionary body with every headword of the index that points at it."""

    headwords: tuple[str, ...]
    body: str


def decode_b64_number(digits: str) -> int:
    """Decode a dictd base64 number (most significant digit first)."""
    value = 0
    for char in digits:
        if char not in _B64:
            raise ValueError(f"not a dictd base64 digit: {char!r} in {digits!r}")
        value = value * 64 + _B64[char]
    return value


def read_dictd(root: Path, name: str) -> Iterator[DictEntry]:
    """Yield the entries of dictionary ``name`` under ``root``, in index order, skipping metadata."""
    index = root / f"{name}.index"
    data = gzip.decompress((root / f"{name}.dict.dz").read_bytes())
    spans: dict[tuple[int, int], list[str]] = {}
    for number, line in enumerate(index.read_text(encoding="utf-8").splitlines(), 1):
        fields = line.split("\t")
        if len(fields) < 3:
            raise BoomError(f"line {number}: expected headword, offset, length", path=index)
        headword, offset, length = fields[:3]
        if headword.startswith("00database") or headword.startswith("00-database"):
            continue
        try:
            span = (decode_b64_number(offset), decode_b64_number(length))
        except ValueError as error:
            raise BoomError(f"line {number}: {error}", path=index) from None
        spans.setdefault(span, []).append(headword)
    for (offset, length), headwords in spans.items():
        body = data[offset : offset + length].decode("utf-8", errors="replace")
        yield DictEntry(headwords=tuple(headwords), body=body)
