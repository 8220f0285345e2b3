"""What every corpus builder shares: the source description, headword keys, the split.

Owns: :class:`Pair`, the source description, headword normalisation and the one seeded split. It
never reads source texts or writes files (it only checks whether a source is installed).

A builder turns one installed text source into :class:`Pair` objects keyed by a
headword. The split (train / dev / test) is decided per *normalised* headword by one
seeded hash, so a term that two sources share (``abacus`` in WordNet and in the Devil's
Dictionary) lands on the same side in both, and no term is ever in two splits at once.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import shutil
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Literal

#: Bump when any builder's output changes, so cached corpora are rebuilt.
#: 3: dev splits; the OOD dev sources (jargon, vera, gcide, python_api).
BUILDER_VERSION = "3"
#: Default caps per source: training lines and test queries; dev queries default to the test cap.
DEFAULT_MAX_TRAIN = 3000
DEFAULT_MAX_TEST_QUERIES = 200
SAME_AS_TEST = "test"
#: Share of headwords that go to the test side (queries plus distractor documents).
TEST_FRACTION = 0.3
#: Share of headwords that go to the dev side (hash in [TEST_FRACTION, TEST_FRACTION + DEV_FRACTION)):
#: the test side is the one of builder version 2; dev is carved out of the former train side.
DEV_FRACTION = 0.1
#: Test corpus size in headwords, as a multiple of the number of test queries.
DISTRACTOR_FACTOR = 5
#: Longest document kept, in characters (embedding models truncate far earlier).
MAX_DOC_CHARS = 1500

Task = Literal["retrieval", "sts"]
Split = Literal["train", "dev", "test"]
#: What a source is for: a training domain, an out-of-domain test (never used for a
#: choice, so it has no dev split) or an out-of-domain dev source (for choices only).
Role = Literal["train", "ood_test", "ood_dev"]
ROLES: tuple[Role, ...] = ("train", "ood_test", "ood_dev")


@dataclass(frozen=True)
class Pair:
    """One query and a document that answers it, under a headword ``key``."""

    key: str
    query: str
    doc: str


@dataclass(frozen=True)
class Selection:
    """Which headwords a build keeps: ``train``, ``test`` and ``dev`` keys in seeded order."""

    train: list[str]
    test: list[str]
    dev: list[str] = field(default_factory=list)

    def __contains__(self, key: str) -> bool:
        return key in self._members

    @cached_property
    def _members(self) -> frozenset[str]:
        return frozenset(self.train) | frozenset(self.test) | frozenset(self.dev)


#: Given every raw headword a source offers, tell which ones the build will use, so
#: that an expensive builder (man pages) reads only those.
Selector = Callable[[Iterable[str]], set[str]]
Reader = Callable[[Path, Selector], list[Pair]]
StsReader = Callable[[Path], list[tuple[str, str, float]]]


@dataclass(frozen=True)
class MtebMeta:
    """How a source is described as an MTEB task (the one place for these facts).

    ``label`` names the task (``Boom{label}Retrieval`` / ``Boom{label}STS``); ``domains``
    are MTEB task domains; ``licence`` an MTEB licence identifier or a URL. The task type
    and main metric follow the source's task kind (``boom_merge.evaluation.tasks.KINDS``).
    """

    label: str
    domains: tuple[str, ...] = ()
    licence: str = "not specified"


@dataclass(frozen=True)
class Source:
    """An installed text source and how to read it.

    A retrieval source has ``read`` (pairs under headwords); an evaluation-only
    similarity source has ``read_sts`` (graded word pairs). ``role`` says what it is for
    (see :data:`Role`); every retrieval source but an ``ood_test`` one gets a dev split.
    ``needs`` are glob patterns under ``root`` that must match, ``modules`` Python modules
    and ``programs`` executables the reader uses; ``install`` provides them all and is
    shown to users when something is absent. ``fetch`` (optional) downloads into ``root`` first.
    """

    name: str
    domain: str
    licence: str
    origin: str
    install: str
    root: Path
    role: Role
    read: Reader | None = None
    read_sts: StsReader | None = None
    fetch: Callable[[Path], None] | None = None
    needs: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()
    programs: tuple[str, ...] = ()
    #: its MTEB task metadata (None: derived from the name, licence "not specified")
    mteb: MtebMeta | None = None

    @property
    def task(self) -> Task:
        return "sts" if self.read_sts else "retrieval"

    @property
    def has_dev(self) -> bool:
        """True if the build writes a dev split of this source."""
        return self.task == "retrieval" and self.role != "ood_test"

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


def split_of(seed: int, key: str) -> Split:
    """The split of the normalised headword ``key``: the same for every source."""
    value = unit_hash(seed, "split", key)
    return "test" if value < TEST_FRACTION else "dev" if value < TEST_FRACTION + DEV_FRACTION else "train"


def is_test_key(seed: int, key: str) -> bool:
    """True if the normalised headword ``key`` belongs to the test side."""
    return split_of(seed, key) == "test"


def select_keys(
    keys: Iterable[str],
    *,
    seed: int,
    max_train: int | None,
    max_test_keys: int | None,
    max_dev_keys: int | None = None,
    dev: bool = True,
) -> Selection:
    """Split normalised ``keys`` by headword and keep the first ones of each split in seeded order.

    Without ``dev`` the dev headwords are dropped (not moved to another split).
    """
    ordered = sorted(set(keys), key=lambda k: (unit_hash(seed, "order", k), k))
    sides: dict[str, list[str]] = {"train": [], "dev": [], "test": []}
    for key in ordered:
        sides[split_of(seed, key)].append(key)
    return Selection(
        train=sides["train"][:max_train],
        test=sides["test"][:max_test_keys],
        dev=sides["dev"][:max_dev_keys] if dev else [],
    )


def selector_for(selection_of: Callable[[Iterable[str]], Selection]) -> Selector:
    """Wrap a selection rule as a :data:`Selector` over raw (unnormalised) headwords."""

    def select(raw_keys: Iterable[str]) -> set[str]:
        raw = list(raw_keys)
        chosen = selection_of(normalise_key(k) for k in raw)
        return {k for k in raw if normalise_key(k) in chosen}

    return select
