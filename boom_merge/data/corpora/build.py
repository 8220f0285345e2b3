"""Build the corpus directory: split, deduplicate, write train/test/sts files, cards, manifest.

Owns: the corpus directory's layout (train, dev, test and sts files, cards). It never reads a
source itself (the readers do) and writes only inside the directory it is given.

Layout (read by the trainer and the evaluator)::

    manifest.json              seed, builder_version, options, sources (counts...), missing
    train/NAME.jsonl           {"query", "pos": [...], "neg": [...]}
    test/NAME/queries.jsonl    {"_id", "text"}
    test/NAME/corpus.jsonl     {"_id", "title", "text"}: relevant documents + distractors
    test/NAME/qrels/test.tsv   query-id, corpus-id, score (BEIR)
    dev/NAME/...               the same BEIR layout, qrels/dev.tsv (not for ood_test sources)
    sts/NAME.tsv               word1, word2, score
    cards/NAME.md              dataset card
"""

from __future__ import annotations

import itertools
import json
import logging
import random
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from boom_merge.data.corpora.common import (
    DISTRACTOR_FACTOR,
    Pair,
    Selection,
    Source,
    Split,
    key_tokens,
    normalise_key,
    select_keys,
    selector_for,
)
from boom_merge.errors import BoomError

logger = logging.getLogger(__name__)

MAX_NEGATIVES = 3
ROLE_TEXT = {
    "train": "a training domain",
    "ood_test": "an out-of-domain test, never used for a choice (so it has no dev split)",
    "ood_dev": "an out-of-domain dev source, for choices (tuning) only",
}
Groups = dict[str, dict[str, list[str]]]


@dataclass(frozen=True)
class BuildOptions:
    """Everything that determines a build's output (and so its cache key)."""

    sources: tuple[str, ...]
    seed: int
    max_train: int | None
    max_test_queries: int | None
    max_dev_queries: int | None
    roots: tuple[tuple[str, str], ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "sources": list(self.sources), "roots": dict(self.roots)}

    def selection_of(self, keys: Iterable[str], *, dev: bool = True) -> Selection:
        """The seeded split and caps of this build applied to normalised headwords (``dev``: keep a dev side)."""
        test_keys = None if self.max_test_queries is None else self.max_test_queries * DISTRACTOR_FACTOR
        dev_keys = None if self.max_dev_queries is None else self.max_dev_queries * DISTRACTOR_FACTOR
        return select_keys(
            keys, seed=self.seed, max_train=self.max_train, max_test_keys=test_keys, max_dev_keys=dev_keys, dev=dev
        )

    def command(self, names: Sequence[str]) -> str:
        """The ``boom-merge data build`` command line that reproduces this build for ``names``."""
        parts = ["boom-merge data build", *(f"--source {name}" for name in names), f"--seed {self.seed}"]
        parts += [] if self.max_train is None else [f"--max-train {self.max_train}"]
        parts += [] if self.max_test_queries is None else [f"--max-test-queries {self.max_test_queries}"]
        parts += [] if self.max_dev_queries is None else [f"--max-dev-queries {self.max_dev_queries}"]
        return " ".join(parts)


def group_pairs(pairs: Iterable[Pair], seen_docs: set[str]) -> Groups:
    """``{normalised key: {query: [docs]}}``, dropping documents already seen (in any source)."""
    groups: Groups = defaultdict(dict)
    for pair in pairs:
        key, fingerprint = normalise_key(pair.key), normalise_key(pair.doc)
        if not key or not pair.query.strip() or fingerprint in seen_docs:
            continue
        seen_docs.add(fingerprint)
        groups[key].setdefault(pair.query, []).append(pair.doc)
    return groups


def hard_negatives(train_keys: Sequence[str], groups: Groups, rng: random.Random) -> dict[str, list[str]]:
    """Up to three documents of other train headwords that share a word with each headword."""
    by_token: dict[str, list[str]] = defaultdict(list)
    for key in train_keys:
        for token in key_tokens(key):
            by_token[token].append(key)
    negatives = {}
    for key in train_keys:
        others = sorted({other for token in key_tokens(key) for other in by_token[token]} - {key})
        chosen = rng.sample(others, min(MAX_NEGATIVES, len(others)))
        negatives[key] = [next(iter(groups[other].values()))[0] for other in chosen]
    return negatives


def _write_jsonl(path: Path, rows: Iterable[Mapping[str, Any]]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


def write_train(
    path: Path, keys: Sequence[str], groups: Groups, negatives: Mapping[str, list[str]], limit: int | None
) -> int:
    """Write FlagEmbedding lines (one per distinct query), at most ``limit``; return the count."""
    rows = (
        {"query": query, "pos": docs, "neg": [n for n in negatives[key] if n not in docs]}
        for key in keys
        for query, docs in groups[key].items()
    )
    return _write_jsonl(path, itertools.islice(rows, limit))


def write_beir(
    directory: Path,
    split: Split,
    name: str,
    keys: Sequence[str],
    groups: Groups,
    max_queries: int | None,
    rng: random.Random,
) -> dict[str, int]:
    """Write one BEIR split: queries from the first headwords, all their documents as corpus.

    Files: ``queries.jsonl``, ``corpus.jsonl``, ``qrels/SPLIT.tsv``; ids are ``NAME-q``/``NAME-d``
    numbers on the test split and ``NAME-SPLIT-q``/``NAME-SPLIT-d`` on others.
    """
    prefix = name if split == "test" else f"{name}-{split}"
    docs = [doc for key in keys for query_docs in groups[key].values() for doc in query_docs]
    rng.shuffle(docs)
    doc_ids = {doc: f"{prefix}-d{number}" for number, doc in enumerate(docs)}
    queries = [(query, query_docs) for key in keys for query, query_docs in groups[key].items()]
    queries = queries[:max_queries] if max_queries is not None else queries
    query_rows = [{"_id": f"{prefix}-q{number}", "text": query} for number, (query, _) in enumerate(queries)]
    qrels = [
        (row["_id"], doc_ids[doc])
        for row, (_, query_docs) in zip(query_rows, queries, strict=True)
        for doc in query_docs
    ]
    _write_jsonl(directory / "queries.jsonl", query_rows)
    _write_jsonl(directory / "corpus.jsonl", ({"_id": doc_ids[doc], "title": "", "text": doc} for doc in docs))
    (directory / "qrels").mkdir()
    lines = ["query-id\tcorpus-id\tscore", *(f"{q}\t{d}\t1" for q, d in qrels)]
    (directory / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {f"{split}_queries": len(query_rows), f"{split}_corpus": len(docs), f"{split}_qrels": len(qrels)}


def build_retrieval(
    source: Source, root: Path, out: Path, options: BuildOptions, seen_docs: set[str]
) -> dict[str, int]:
    """Read, deduplicate, split and write one retrieval source; return its counts."""

    def selection_of(keys: Iterable[str]) -> Selection:
        return options.selection_of(keys, dev=source.has_dev)

    groups = group_pairs(source.read(root, selector_for(selection_of)), seen_docs)
    selection = selection_of(groups)
    if not selection.train or not selection.test or (source.has_dev and not selection.dev):
        raise BoomError(f"source {source.name} gave too few entries to split ({len(groups)} headwords)", path=root)
    negatives = hard_negatives(selection.train, groups, random.Random(f"{options.seed}:{source.name}"))
    train_file = out / "train" / f"{source.name}.jsonl"
    counts = {
        "headwords": len(groups),
        "train": write_train(train_file, selection.train, groups, negatives, options.max_train),
    }
    splits: list[tuple[Split, list[str], int | None]] = [("test", selection.test, options.max_test_queries)]
    if source.has_dev:
        splits.append(("dev", selection.dev, options.max_dev_queries))
    for split, keys, max_queries in splits:
        rng = random.Random(f"{options.seed}:{source.name}:{split}")
        counts |= write_beir(out / split / source.name, split, source.name, keys, groups, max_queries, rng)
    return counts


def build_sts(source: Source, root: Path, out: Path) -> dict[str, int]:
    """Write one graded-similarity source as ``sts/NAME.tsv``; return its counts."""
    rows = source.read_sts(root)
    (out / "sts").mkdir(exist_ok=True)
    lines = ["word1\tword2\tscore", *(f"{a}\t{b}\t{score:g}" for a, b, score in rows)]
    (out / "sts" / f"{source.name}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"pairs": len(rows)}


def write_card(out: Path, source: Source, entry: Mapping[str, Any]) -> None:
    """Write ``cards/NAME.md``: what the dataset is, where it comes from, its licence and counts."""
    if source.task == "sts":
        layout, split = f"`sts/{source.name}.tsv` (word1, word2, score)", "Evaluation only: no training split.\n\n"
    else:
        dev = f", `dev/{source.name}/`" if source.has_dev else ""
        layout = f"`train/{source.name}.jsonl`, `test/{source.name}/`{dev} (BEIR: queries, corpus, qrels)"
        split = (
            f"Train, {'dev and ' if source.has_dev else ''}test are split by normalised headword with a "
            "seeded hash shared by all sources, so no headword is in two splits; documents of further "
            f"headwords of the same split serve as distractors. Role: {ROLE_TEXT[source.role]}.\n\n"
        )
    counts = "\n".join(f"| {key} | {value} |" for key, value in entry["counts"].items())
    text = (
        f"# {source.name}\n\n{source.domain}.\n\n"
        f"- **Source:** {source.origin}\n- **Licence:** {source.licence}\n"
        f"- **Task:** {source.task}\n- **Files:** {layout}\n"
        f"- **Install:** `{source.install}`\n- **Build command:** `{entry['build_command']}`\n\n"
        f"{split}| count | value |\n|---|---|\n{counts}\n"
    )
    (out / "cards").mkdir(exist_ok=True)
    (out / "cards" / f"{source.name}.md").write_text(text, encoding="utf-8")
