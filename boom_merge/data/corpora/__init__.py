"""Embedded corpora built offline from what Debian and PyPI packages install.

Owns: building a corpus from the registry's sources, the corpus cache
(:func:`default_corpus_dir`) and the corpus manifest. It writes only the corpus directory it
builds (atomically, through :mod:`boom_merge.outputs`) and what a source's ``fetch`` puts in
the downloads cache (the gensim wheel); it may not read evaluation results or models.

``build_corpora`` reads each available source (WordNet, FOLDOC, man pages, KJV -> WEB,
the Python standard library and FAQ, the Devil's Dictionary, WordSim-353, and the
out-of-domain dev sources Jargon File, VERA, GCIDE, Python API docs), splits it by
headword into train / dev / test (no normalised term in two splits, across all sources),
and writes training lines, BEIR dev and test tasks, dataset cards and a manifest. Missing sources are named
with the command that installs them and the build goes on. Builds are cached under
:func:`default_corpus_dir`, keyed by their options: an identical second build is instant.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from boom_merge.cache_dir import cache_root
from boom_merge.data.corpora.build import BuildOptions, build_retrieval, build_sts, write_card
from boom_merge.data.corpora.common import (
    BUILDER_VERSION,
    ROLES,
    DEFAULT_MAX_TEST_QUERIES,
    DEFAULT_MAX_TRAIN,
    SAME_AS_TEST,
    Role,
    Source,
)
from boom_merge.data.corpora.sources import registry
from boom_merge.errors import BoomError
from boom_merge.outputs import atomic_output_dir

__all__ = [
    "CorpusBuild",
    "available_sources",
    "build_corpora",
    "default_corpus_dir",
    "sources_with_role",
]

logger = logging.getLogger(__name__)

#: a dev query cap, or ``SAME_AS_TEST`` ("test"): the test cap
DevCap = int | None | Literal["test"]


@dataclass(frozen=True)
class CorpusBuild:
    """The result of :func:`build_corpora`.

    ``built`` maps each written source to its counts, ``missing`` each absent source to
    the command that installs it; ``cached`` is True when an earlier identical build
    was reused without reading any source.
    """

    path: Path
    built: dict[str, dict[str, int]]
    missing: dict[str, str] = field(default_factory=dict)
    cached: bool = False


def _options(
    sources: Sequence[str] | None,
    seed: int,
    max_train: int | None,
    max_test_queries: int | None,
    max_dev_queries: DevCap,
    roots: Mapping[str, Path] | None,
) -> BuildOptions:
    """Validate the build options at the edge: known source names, positive caps (the dev cap resolved)."""
    known = registry()
    names = list(known) if not sources else list(dict.fromkeys(sources))
    unknown = [name for name in names if name not in known]
    if unknown:
        raise BoomError(f"unknown source {unknown[0]!r}; choose from {', '.join(known)}")
    if max_dev_queries == SAME_AS_TEST:
        max_dev_queries = max_test_queries
    caps = {"--max-train": max_train, "--max-test-queries": max_test_queries, "--max-dev-queries": max_dev_queries}
    for flag, value in caps.items():
        if value is not None and value < 1:
            raise BoomError(f"{flag} must be at least 1, got {value}")
    ordered = tuple(name for name in known if name in names)
    resolved_roots = tuple(sorted((name, str(Path(root).absolute())) for name, root in (roots or {}).items()))
    return BuildOptions(ordered, seed, max_train, max_test_queries, max_dev_queries, resolved_roots)


def _corpus_dir(options: BuildOptions) -> Path:
    payload = json.dumps({"builder_version": BUILDER_VERSION, **options.as_json()}, sort_keys=True)
    return cache_root() / "corpora" / hashlib.sha256(payload.encode()).hexdigest()[:16]


def default_corpus_dir(
    sources: Sequence[str] | None = None,
    *,
    seed: int = 0,
    max_train: int | None = DEFAULT_MAX_TRAIN,
    max_test_queries: int | None = DEFAULT_MAX_TEST_QUERIES,
    max_dev_queries: DevCap = SAME_AS_TEST,
) -> Path:
    """The cache directory of a build with these options (under :func:`cache_root`)."""
    return _corpus_dir(_options(sources, seed, max_train, max_test_queries, max_dev_queries, None))


def sources_with_role(role: Role) -> tuple[str, ...]:
    """Names of the known sources with ``role`` (``train``, ``ood_test``, ``ood_dev``), in build order."""
    return tuple(name for name, source in registry().items() if source.role == role)


def _root(source: Source, options: BuildOptions) -> Path:
    return Path(dict(options.roots).get(source.name, source.root))


def available_sources(roots: Mapping[str, Path] | None = None) -> dict[str, str | None]:
    """Every known source name -> None if it is readable here, else the install command."""
    overrides = {name: Path(root) for name, root in (roots or {}).items()}
    return {
        name: None if source.missing_reason(overrides.get(name, source.root)) is None else source.install
        for name, source in registry().items()
    }


def _cached(out: Path, options: BuildOptions) -> dict[str, Any] | None:
    """The manifest of an existing build with the same options whose missing sources are still missing."""
    try:
        manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if manifest.get("builder_version") != BUILDER_VERSION or manifest.get("options") != options.as_json():
        return None
    known = registry()
    if any(known[name].missing_reason(_root(known[name], options)) is None for name in manifest.get("missing", {})):
        logger.info("%s: a source missing at build time is installed now; rebuilding", out)
        return None
    return manifest


def build_corpora(
    out: Path | None = None,
    sources: Sequence[str] | None = None,
    *,
    seed: int = 0,
    max_train: int | None = DEFAULT_MAX_TRAIN,
    max_test_queries: int | None = DEFAULT_MAX_TEST_QUERIES,
    max_dev_queries: DevCap = SAME_AS_TEST,
    force: bool = False,
    roots: Mapping[str, Path] | None = None,
) -> CorpusBuild:
    """Build the corpora of ``sources`` (default: all) into ``out`` (default: the cache).

    ``max_train`` caps training lines, ``max_test_queries`` test and ``max_dev_queries``
    dev queries per source (None: no cap; dev defaults to the test cap); each test (dev)
    corpus holds the documents of up to five times as many test (dev) headwords.
    ``ood_test`` sources get no dev split. ``roots`` points sources at other directories
    (tests, other distributions). An existing build with the same options is reused unless ``force``.
    """
    options = _options(sources, seed, max_train, max_test_queries, max_dev_queries, roots)
    target = Path(out) if out is not None else _corpus_dir(options)
    manifest = None if force else _cached(target, options)
    if manifest is not None:
        logger.info("%s: reusing the cached build", target)
        counts = {name: entry["counts"] for name, entry in manifest["sources"].items()}
        return CorpusBuild(path=target, built=counts, missing=manifest["missing"], cached=True)
    known = registry()
    entries: dict[str, dict[str, Any]] = {}
    missing: dict[str, str] = {}
    seen_docs: set[str] = set()
    read = [_root(known[name], options) for name in options.sources]  # the source dirs: never written
    with atomic_output_dir(target, force=force or out is None, inputs=read) as tmp:
        for name in options.sources:
            source, root = known[name], _root(known[name], options)
            if source.fetch is not None:
                source.fetch(root)
            reason = source.missing_reason(root)
            if reason is not None:
                logger.warning("source %s is missing (%s); install it with: %s", name, reason, source.install)
                missing[name] = source.install
                continue
            logger.info("building %s from %s", name, root)
            counts = (
                build_sts(source, root, tmp)
                if source.task == "sts"
                else build_retrieval(source, root, tmp, options, seen_docs)
            )
            entries[name] = {
                "domain": source.domain,
                "role": source.role,
                "splits": ["sts"] if source.task == "sts" else ["train", *(["dev"] if source.has_dev else []), "test"],
                "task": source.task,
                "licence": source.licence,
                "mteb": asdict(source.mteb) if source.mteb else None,
                "source": source.origin,
                "counts": counts,
                "build_command": options.command([name]),
            }
            write_card(tmp, source, entries[name])
        manifest = {
            "seed": seed,
            "builder_version": BUILDER_VERSION,
            "options": options.as_json(),
            "sources": entries,
            "missing": missing,
            "roles": {role: [n for n, e in entries.items() if e["role"] == role] for role in ROLES},
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return CorpusBuild(path=target, built={name: e["counts"] for name, e in entries.items()}, missing=missing)
