"""What every corpus builder shares: the source description, headword keys, the split.

A builder turns one installed text source into :class:`Pair` objects keyed by a
headword. The split is decided per *normalised* headword by a seeded hash, so a term
that two sources share (``abacus`` in WordNet and in the Devil's Dictionary) lands on
the same side in both, and no term is ever in train and test at once.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import shutil
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

#: Bump when any builder's output changes, so cached corpora are rebuilt.
BUILDER_VERSION = "2"
#: Default caps per source: training lines and test queries.
DEFAULT_MAX_TRAIN = 3000
DEFAULT_MAX_TEST_QUERIES = 200
#: Share of headwords that go to the test side (queries plus distractor documents).
TEST_FRACTION = 0.3
#: Test corpus size in headwords, as a multiple of the number of test queries.
DISTRACTOR_FACTOR = 5
#: Longest document kept, in characters (embedding models truncate far earlier).
MAX_DOC_CHARS = 1500

Task = Literal["retrieval", "sts"]


@dataclass(frozen=True)
class Pair:
    """One query and a document that answers it, under a headword ``key``."""

    key: str
    query: str
    doc: str


@dataclass(frozen=True)
class Selection:
    """Which headwords a build keeps: ``train`` and ``test`` keys in seeded order."""

    train: list[str]
    test: list[str]

    def __contains__(self, key: str) -> bool:
        return key in self._members

    @cached_property
    def _members(self) -> frozenset[str]:
        return frozenset(self.train) | frozenset(self.test)


#: Given every raw headword a source offers, tell which ones the build will use, so
#: that an expensive builder (man pages) reads only those.
Selector = Callable[[Iterable[str]], set[str]]
Reader = Callable[[Path, Selector], list[Pair]]
StsReader = Callable[[Path], list[tuple[str, str, float]]]


@dataclass(frozen=True)
class Source:
    """An installed text source and how to read it.

    A retrieval source has ``read`` (pairs under headwords); an evaluation-only
    similarity source has ``read_sts`` (graded word pairs). ``needs`` are glob patterns
    under ``root`` that must match, ``modules`` Python modules and ``programs``
    executables the reader uses; ``install`` provides them all and is shown to users
    when something is absent. ``fetch`` (optional) downloads into ``root`` first.
    """

    name: str
    domain: str
    licence: str
    origin: str
    install: str
    root: Path
    read: Reader | None = None
    read_sts: StsReader | None = None
    fetch: Callable[[Path], None] | None = None
    needs: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()
    programs: tuple[str, ...] = ()

    @property
    def task(self) -> Task:
        return "sts" if self.read_sts else "retrieval"

    def missing_reason(self, root: Path) -> str | None:
        """Say what is absent under ``root`` (a file, module or program), or None if all is there."""
        for pattern in self.needs:
            if not any(root.glob(pattern)):
                return f"no {root / pattern}"
        for module in self.modules:
            if importlib.util.find_spec(module) is None:
                return f"Python module {module!r} not installed"
        for program in self.programs:
            if shutil.which(program) is None:
                return f"program {program!r} not on PATH"
        return None


_SPACE = re.compile(r"\s+")
_TOKEN = re.compile(r"[^\W\d_]{3,}")
_STOPWORDS = frozenset(
    "the and for are can how does what why with from into this that when which who not use using get set python".split()
)


def normalise_key(key: str) -> str:
    """Fold a headword for dedup and split: NFKC, casefold, ``_``/``-`` as spaces."""
    key = unicodedata.normalize("NFKC", key).casefold().replace("_", " ").replace("-", " ")
    return _SPACE.sub(" ", key).strip(" \t.,;:!?'\"")


def clean_text(text: str, limit: int = MAX_DOC_CHARS) -> str:
    """Collapse whitespace and cut at ``limit`` characters, at a word boundary."""
    text = _SPACE.sub(" ", text).strip()
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0]


def key_tokens(key: str) -> set[str]:
    """Content words of a normalised headword, used to find hard negatives."""
    return {t for t in _TOKEN.findall(key) if t not in _STOPWORDS}


def unit_hash(seed: int, salt: str, key: str) -> float:
    """A seeded, platform-independent number in [0, 1) for ``key``."""
    digest = hashlib.blake2b(f"{seed}\0{salt}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def is_test_key(seed: int, key: str) -> bool:
    """The split: True if the normalised headword ``key`` belongs to the test side."""
    return unit_hash(seed, "split", key) < TEST_FRACTION


def select_keys(keys: Iterable[str], *, seed: int, max_train: int | None, max_test_keys: int | None) -> Selection:
    """Split normalised ``keys`` by headword and keep the first ones in seeded order."""
    ordered = sorted(set(keys), key=lambda k: (unit_hash(seed, "order", k), k))
    train = [k for k in ordered if not is_test_key(seed, k)]
    test = [k for k in ordered if is_test_key(seed, k)]
    return Selection(train=train[:max_train], test=test[:max_test_keys])


def selector_for(selection_of: Callable[[Iterable[str]], Selection]) -> Selector:
    """Wrap a selection rule as a :data:`Selector` over raw (unnormalised) headwords."""

    def select(raw_keys: Iterable[str]) -> set[str]:
        raw = list(raw_keys)
        chosen = selection_of(normalise_key(k) for k in raw)
        return {k for k in raw if normalise_key(k) in chosen}

    return select
