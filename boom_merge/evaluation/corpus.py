"""Read the test and dev sides of a built corpus (``boom-merge data build``) from disk.

Owns: reading a built corpus's manifest, dev and test splits, and the caps. It never writes and
never builds a corpus (:mod:`boom_merge.data.corpora` does).

Layout (one directory per source under ``test/`` and ``dev/``)::

    manifest.json                 {"sources": {NAME: {"domain", "task", "licence", "splits", "mteb", ...}}, ...}
    test/NAME/queries.jsonl       {"_id", "text"}
    test/NAME/corpus.jsonl        {"_id", "title", "text"}
    test/NAME/qrels/test.tsv      query-id<TAB>corpus-id<TAB>score (with header)
    dev/NAME/...                  the same, with qrels/dev.tsv
    sts/wordsim353.tsv            word1<TAB>word2<TAB>score (with header; test only)

A source's MTEB metadata is the manifest's ``mteb`` object, else the registry entry's
(:class:`boom_merge.data.corpora.common.MtebMeta`), else derived from its name.

Evaluation (MTEB tasks) and drift both read it through this module, with the same
caps so that quick runs stay cheap on a CPU.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from boom_merge.data.corpora.common import MtebMeta, Task
from boom_merge.errors import BoomError

Split = Literal["test", "dev"]
SPLITS: tuple[Split, ...] = ("test", "dev")


@dataclass(frozen=True)
class BuiltSource:
    """One dataset of the corpus, as the manifest describes it."""

    name: str
    task: Task
    domain: str
    licence: str
    mteb: MtebMeta
    splits: tuple[str, ...] = ()

    def has_split(self, corpus_dir: Path, split: Split) -> bool:
        """Whether the corpus holds this source's ``split`` (STS sources: test only)."""
        if self.task == "sts":
            return split == "test"
        return split in self.splits if self.splits else (corpus_dir / split / self.name).is_dir()


@dataclass(frozen=True)
class RetrievalSplit:
    """Queries, documents and relevance judgements of one retrieval test split."""

    queries: dict[str, str]
    corpus: dict[str, dict[str, str]]
    qrels: dict[str, dict[str, int]]


@dataclass(frozen=True)
class STSPairs:
    """Graded text pairs (e.g. WordSim-353)."""

    text1: list[str]
    text2: list[str]
    scores: list[float]


def check_limits(**limits: int | None) -> None:
    """Refuse caps and batch sizes below 1 (None means no cap)."""
    for name, value in limits.items():
        if value is not None and value < 1:
            raise BoomError(f"--{name.replace('_', '-')} must be at least 1, got {value}")


def find_corpus_dir(corpus_dir: str | Path | None, *, required: bool = True) -> Path | None:
    """The corpus to read: ``corpus_dir``, else the default built corpus if there is one.

    Returns None only when nothing was given, no default corpus exists and
    ``required`` is False (e.g. only standard MTEB tasks were asked for).
    """
    from boom_merge.data.corpora import default_corpus_dir

    path = Path(corpus_dir) if corpus_dir is not None else default_corpus_dir()
    if not (path / "manifest.json").is_file():
        if corpus_dir is None and not required:
            return None
        raise BoomError(
            "not a built corpus (no manifest.json): pass --corpus DIR or run `boom-merge data build`", path=path
        )
    return path


def read_sources(corpus_dir: Path) -> dict[str, BuiltSource]:
    """The sources listed in ``manifest.json``, by name."""
    path = corpus_dir / "manifest.json"
    manifest = _read_json(path)
    sources = manifest.get("sources") if isinstance(manifest, dict) else None
    if not isinstance(sources, dict):
        raise BoomError('manifest has no "sources" object', path=path)
    out = {}
    for name, info in sources.items():
        task = info.get("task") if isinstance(info, dict) else None
        if task not in ("retrieval", "sts"):
            raise BoomError(f'source {name!r}: "task" must be "retrieval" or "sts", got {task!r}', path=path)
        licence = str(info.get("licence", ""))
        splits = tuple(map(str, info.get("splits") or ()))
        out[name] = BuiltSource(name, task, str(info.get("domain", "")), licence, _mteb_meta(name, info, path), splits)
    return out


def _mteb_meta(name: str, info: dict[str, Any], path: Path) -> MtebMeta:
    """The manifest's ``mteb`` object, else the registry's entry, else one derived from the name."""
    from boom_merge.data.corpora.sources import registry

    given = info.get("mteb")
    if isinstance(given, dict):
        try:
            return MtebMeta(str(given["label"]), tuple(map(str, given.get("domains") or ())),
                            str(given.get("licence") or "not specified"))
        except KeyError:
            raise BoomError(f'source {name!r}: "mteb" needs a "label"', path=path) from None
    known = registry().get(name)
    if known is not None and known.mteb is not None:
        return known.mteb
    label = "".join(part.capitalize() for part in name.replace("-", "_").split("_"))
    return MtebMeta(label, licence=_mteb_licence(str(info.get("licence", ""))))


def _mteb_licence(licence: str) -> str:
    """``licence`` if MTEB accepts it (one of its identifiers or a URL), else "not specified"."""
    from mteb.types._metadata import Licenses

    value = licence.strip().lower()
    if value in get_args(Licenses) or value.startswith(("http://", "https://")):
        return value
    return "not specified"


def sts_path(corpus_dir: Path, name: str) -> Path:
    """Where an STS source's pairs live."""
    return corpus_dir / "sts" / f"{name}.tsv"


def read_retrieval(
    corpus_dir: Path,
    name: str,
    *,
    max_queries: int | None = None,
    max_corpus: int | None = None,
    split: Split = "test",
) -> RetrievalSplit:
    """Read ``SPLIT/NAME`` (``test`` or ``dev``); keep queries with a relevant document, capped.

    ``max_queries`` keeps the first queries in file order. ``max_corpus`` keeps every
    document relevant to a kept query, then fills up with the other documents in file
    order until the corpus has ``max_corpus`` documents (never dropping a relevant one),
    so a capped task is a smaller but still honest retrieval problem.
    """
    root = corpus_dir / split / name
    qrels = _read_qrels(root / "qrels" / f"{split}.tsv")
    queries = {
        row["_id"]: row["text"]
        for row in _read_jsonl(root / "queries.jsonl", ("_id", "text"))
        if row["_id"] in qrels
    }
    corpus = {
        row["_id"]: {"title": row.get("title") or "", "text": row["text"]}
        for row in _read_jsonl(root / "corpus.jsonl", ("_id", "text"))
    }
    missing = {doc for docs in qrels.values() for doc in docs} - corpus.keys()
    if missing:
        raise BoomError(f"qrels name {len(missing)} documents not in corpus.jsonl, e.g. {min(missing)!r}", path=root)
    if not queries:
        raise BoomError("no query has a relevant document", path=root)
    kept_queries, kept_docs = capped_ids(list(queries), list(corpus), qrels, max_queries, max_corpus)
    return RetrievalSplit(
        {qid: queries[qid] for qid in kept_queries},
        {doc: corpus[doc] for doc in kept_docs},
        {qid: qrels[qid] for qid in kept_queries},
    )


def capped_ids(
    query_ids: list[str],
    doc_ids: list[str],
    qrels: dict[str, dict[str, int]],
    max_queries: int | None,
    max_corpus: int | None,
) -> tuple[list[str], list[str]]:
    """The queries and documents a capped retrieval split keeps, in their given order.

    The first ``max_queries`` queries that have a relevant document; every document
    relevant to a kept query, then the other documents in order until there are
    ``max_corpus`` (a relevant document is never dropped).
    """
    queries = [qid for qid in query_ids if qrels.get(qid)][:max_queries]
    relevant = {doc for qid in queries for doc, score in qrels[qid].items() if score > 0}
    if max_corpus is None:
        return queries, doc_ids
    room = max(0, max_corpus - len(relevant))
    others = set([doc for doc in doc_ids if doc not in relevant][:room])
    return queries, [doc for doc in doc_ids if doc in relevant or doc in others]


def read_sts(path: Path) -> STSPairs:
    """Read a ``word1 word2 score`` TSV with a header line."""
    rows = _read_tsv(path, ("word1", "word2", "score"))
    try:
        scores = [float(row["score"]) for row in rows]
    except ValueError as error:
        raise BoomError(f"bad score: {error}", path=path) from None
    if len(rows) < 3:
        raise BoomError("fewer than 3 scored pairs", path=path)
    return STSPairs([row["word1"] for row in rows], [row["word2"] for row in rows], scores)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BoomError("file not found", path=path) from None
    except json.JSONDecodeError as error:
        raise BoomError(f"invalid JSON: {error}", path=path) from None
    except UnicodeDecodeError as error:
        raise _not_utf8(path, error) from None


def _not_utf8(path: Path, error: UnicodeDecodeError) -> BoomError:
    return BoomError(f"not UTF-8 text (invalid byte {error.object[error.start]:#04x})", path=path)


def _read_jsonl(path: Path, required: tuple[str, ...]) -> list[dict[str, Any]]:
    rows = []
    try:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    raise BoomError(f"line {number}: invalid JSON: {error}", path=path) from None
                if not isinstance(row, dict) or any(not isinstance(row.get(key), str) for key in required):
                    raise BoomError(f"line {number}: needs string fields {', '.join(required)}", path=path)
                rows.append(row)
    except FileNotFoundError:
        raise BoomError("file not found", path=path) from None
    except UnicodeDecodeError as error:
        raise _not_utf8(path, error) from None
    return rows


def _read_tsv(path: Path, header: tuple[str, ...]) -> list[dict[str, str]]:
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
            if tuple(reader.fieldnames or ()) != header:
                raise BoomError(f"header must be {'<TAB>'.join(header)}, got {reader.fieldnames}", path=path)
            rows = list(reader)
    except FileNotFoundError:
        raise BoomError("file not found", path=path) from None
    except UnicodeDecodeError as error:
        raise _not_utf8(path, error) from None
    if any(None in row.values() for row in rows):
        raise BoomError(f"every line needs {len(header)} tab-separated fields", path=path)
    return rows


def _read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    for row in _read_tsv(path, ("query-id", "corpus-id", "score")):
        try:
            score = int(float(row["score"]))
        except ValueError:
            raise BoomError(f"bad score {row['score']!r} for query {row['query-id']!r}", path=path) from None
        if score > 0:
            qrels.setdefault(row["query-id"], {})[row["corpus-id"]] = score
    return qrels
