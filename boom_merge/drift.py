"""How far an update moved the embedding space: must a vector index be rebuilt?

For each dataset of a built corpus (its test split), OLD and NEW encode the same
texts (queries and documents). We report

- mean and 5th-percentile cosine between OLD and NEW embeddings of each text;
- recall@10 of NEW-encoded queries against an index of OLD-encoded documents, where
  the ground truth is the OLD model's own top-10 for the same queries (not the qrels):
  1.0 means an index built with OLD returns exactly what it returned before, so it
  can keep serving; lower values are the share of neighbours a user would lose by not
  re-encoding the index.

``boom-merge incremental --data DIR`` calls :func:`drift_report` and prints
:func:`format_drift`.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from boom_merge.errors import BoomError
from boom_merge.evaluation.corpus import check_limits, find_corpus_dir, read_retrieval, read_sources, read_sts, sts_path
from boom_merge.models import load_sentence_transformer, resolve_model

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

K = 10
REINDEX_RECALL = 0.95
"""Rule of thumb: below this recall@10 on any dataset, re-encode the index with NEW."""


@dataclass(frozen=True)
class DatasetDrift:
    """Drift on one dataset. ``recall_at_10`` is None for pair (STS) data."""

    dataset: str
    texts: int
    mean_cosine: float
    p5_cosine: float
    queries: int
    recall_at_10: float | None


@dataclass(frozen=True)
class DriftReport:
    """Per-dataset drift from ``old`` to ``new``."""

    old: str
    new: str
    datasets: list[DatasetDrift]
    threshold: float = REINDEX_RECALL

    @property
    def min_recall(self) -> float | None:
        """The lowest recall@10 over retrieval datasets (None without any)."""
        recalls = [d.recall_at_10 for d in self.datasets if d.recall_at_10 is not None]
        return min(recalls) if recalls else None

    @property
    def rebuild_index(self) -> bool:
        """Whether an index built with OLD should be re-encoded with NEW."""
        return self.min_recall is not None and self.min_recall < self.threshold

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return {**asdict(self), "min_recall": self.min_recall, "rebuild_index": self.rebuild_index}


def drift_report(
    old_model: str | Path,
    new_model: str | Path,
    data_dir: str | Path | None = None,
    *,
    max_queries: int | None = 100,
    max_corpus: int | None = 1000,
    batch_size: int = 32,
    threshold: float = REINDEX_RECALL,
    progress: bool = False,
    device: str | None = None,
) -> DriftReport:
    """Compare OLD and NEW on every dataset of the corpus at ``data_dir``.

    OLD and NEW are local dirs or Hub ids (``org/name[@REV]``), checked by
    :func:`boom_merge.models.check_model` (tokenizer present, weights finite) and loaded on
    ``device`` (default: cuda when available). ``data_dir`` is a built corpus (default: the
    default corpus); queries and documents are capped as in ``boom-merge eval`` (first
    ``max_queries`` queries, their relevant documents plus others up to ``max_corpus``).
    """
    check_limits(max_queries=max_queries, max_corpus=max_corpus, batch_size=batch_size)
    corpus = find_corpus_dir(data_dir)
    old, new = (_load(spec, device) for spec in (old_model, new_model))
    if old.get_embedding_dimension() != new.get_embedding_dimension():
        raise BoomError(
            f"OLD and NEW embed in different dimensions ({old.get_embedding_dimension()} vs "
            f"{new.get_embedding_dimension()}): every index must be rebuilt",
            path=new_model,
        )

    def encode(model: SentenceTransformer, texts: list[str]) -> np.ndarray:
        embeddings = model.encode(
            texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=progress
        )
        if not np.isfinite(embeddings).all():
            spec = old_model if model is old else new_model
            raise BoomError("the model produced NaN or Inf embeddings (overflow in its dtype?)", path=spec)
        return embeddings

    datasets = []
    for name, source in read_sources(corpus).items():
        logger.info("drift on %s", name)
        if source.task == "retrieval":
            split = read_retrieval(corpus, name, max_queries=max_queries, max_corpus=max_corpus)
            queries = list(split.queries.values())
            docs = [f"{d['title']} {d['text']}".strip() for d in split.corpus.values()]
            datasets.append(
                retrieval_drift(
                    name, encode(old, queries), encode(new, queries), encode(old, docs), encode(new, docs)
                )
            )
        else:
            pairs = read_sts(sts_path(corpus, name))
            texts = sorted(set(pairs.text1) | set(pairs.text2))
            datasets.append(_cosines(name, encode(old, texts), encode(new, texts), queries=0, recall=None))
    return DriftReport(str(old_model), str(new_model), datasets, threshold)


def _load(spec: str | Path, device: str | None) -> SentenceTransformer:
    """A checked sentence-transformers model (a plain transformers dir would pool silently)."""
    resolved = resolve_model(spec)
    if not (resolved.path / "modules.json").is_file():
        raise BoomError("not a sentence-transformers model (no modules.json)", path=resolved.spec)
    return load_sentence_transformer(resolved, device=device)


def retrieval_drift(
    name: str, old_q: np.ndarray, new_q: np.ndarray, old_d: np.ndarray, new_d: np.ndarray
) -> DatasetDrift:
    """Drift from unit-norm embeddings of the same queries and documents."""
    k = min(K, len(old_d))
    index = old_d.T
    before = _top_k(old_q @ index, k)
    after = _top_k(new_q @ index, k)
    recall = float(np.mean([len(set(b) & set(a)) / k for b, a in zip(before, after)]))
    return _cosines(name, np.vstack([old_q, old_d]), np.vstack([new_q, new_d]), queries=len(old_q), recall=recall)


def format_drift(report: DriftReport) -> str:
    """A plain-text table and a one-line verdict on re-encoding the index."""
    header = f"{'dataset':<16} {'texts':>6} {'mean cos':>9} {'p5 cos':>7} {'queries':>7} {'recall@10':>9}"
    lines = [f"Embedding drift: {report.old} -> {report.new}", header, "-" * len(header)]
    for d in report.datasets:
        recall = "n/a" if d.recall_at_10 is None else f"{d.recall_at_10:.3f}"
        lines.append(
            f"{d.dataset:<16} {d.texts:>6} {d.mean_cosine:>9.4f} {d.p5_cosine:>7.4f} {d.queries:>7} {recall:>9}"
        )
    if report.min_recall is None:
        lines.append("No retrieval data: recall@10 not measured.")
    elif report.rebuild_index:
        lines.append(
            f"Rebuild the index: NEW queries find only {report.min_recall:.1%} of OLD's top-10 "
            f"on the worst dataset (threshold {report.threshold:.0%}); re-encode documents with NEW."
        )
    else:
        lines.append(
            f"The OLD index still serves NEW queries: recall@10 >= {report.threshold:.0%} on every dataset "
            f"(lowest {report.min_recall:.1%}); re-encode when convenient."
        )
    return "\n".join(lines)


def _top_k(similarity: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest scores per row (stable on ties)."""
    return np.argsort(-similarity, axis=1, kind="stable")[:, :k]


def _cosines(name: str, old: np.ndarray, new: np.ndarray, *, queries: int, recall: float | None) -> DatasetDrift:
    cosine = np.sum(old * new, axis=1)
    return DatasetDrift(
        dataset=name,
        texts=len(cosine),
        mean_cosine=float(cosine.mean()),
        p5_cosine=float(np.percentile(cosine, 5)),
        queries=queries,
        recall_at_10=recall,
    )
