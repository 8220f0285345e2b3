"""How far an update moved the embedding space: must a vector index be rebuilt?

Owns: the drift report (cosines, recall against OLD's own neighbours, serving quality) and the
keep / adapt / rebuild verdict. It may not fit or save the adapter itself
(:mod:`boom_merge.incremental.adapter` does) and writes nothing else.

For each dataset of a built corpus (its test split), OLD and NEW encode the same
texts (queries and documents). We report

- mean and 5th-percentile cosine between OLD and NEW embeddings of each text;
- recall@10 of NEW-encoded queries against an index of OLD-encoded documents, where
  the ground truth is the OLD model's own top-10 for the same queries (not the qrels):
  1.0 means an index built with OLD returns exactly what it returned before, so it
  can keep serving; lower values are the share of neighbours a user would lose by not
  re-encoding the index;
- serving quality against the qrels (recall@10 and nDCG@10) of four ways to answer
  queries: OLD on its own index (today), NEW queries on the OLD index, NEW queries
  through a query adapter on the OLD index (with ``adapter``: fitted here by
  :mod:`boom_merge.incremental.adapter` on the corpus' *train* split, never on the texts scored),
  and NEW on a re-encoded index (the ceiling); and the verdict: keep the index, keep it
  with the adapter, or rebuild it.

``boom-merge incremental --corpus DIR`` calls :func:`drift_report` and prints
:func:`format_drift`.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from boom_merge.incremental.adapter import Adapter, AdapterKind, fit_adapter, fit_texts, save_adapter_model
from boom_merge.errors import BoomError
from boom_merge.evaluation.corpus import (
    RetrievalSplit, STSPairs, check_limits, find_corpus_dir, read_retrieval, read_sources, read_sts, sts_path,
)
from boom_merge.model_refs import load_sentence_transformer, resolve_model

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

K = 10
REINDEX_RECALL = 0.95
"""Rule of thumb: below this recall@10 on any dataset, re-encode the index with NEW."""
KEEP_SHARE = 0.95
"""The OLD index is kept (with or without the adapter) when its nDCG@10 is at least this
share of the re-indexed ceiling's on every dataset."""

#: the ways to serve queries, in report order: (queries, index)
SERVING = ("old", "new_on_old_index", "adapter_on_old_index", "reindexed")
_SERVING_TEXT = {"old": "OLD (today)", "new_on_old_index": "NEW q, OLD index",
                 "adapter_on_old_index": "NEW+adapter, OLD index", "reindexed": "NEW re-indexed"}
VERDICTS = ("keep the index", "keep the index with the adapter", "rebuild the index")


@dataclass(frozen=True)
class Serving:
    """Quality against the qrels of one way to serve the queries."""

    recall_at_10: float
    ndcg_at_10: float


@dataclass(frozen=True)
class DatasetDrift:
    """Drift on one dataset. ``recall_at_10`` (agreement with OLD's own top-10) is None for pair
    (STS) data; ``serving`` (against the qrels, keyed by :data:`SERVING`) is None there too."""

    dataset: str
    texts: int
    mean_cosine: float
    p5_cosine: float
    queries: int
    recall_at_10: float | None
    adapted_recall_at_10: float | None = None
    serving: dict[str, Serving] | None = None

    @property
    def verdict(self) -> str | None:
        """Keep the index / keep it with the adapter / rebuild it (None without qrels scores)."""
        if not self.serving:
            return None
        ceiling = self.serving["reindexed"].ndcg_at_10
        if self.serving["new_on_old_index"].ndcg_at_10 >= KEEP_SHARE * ceiling:
            return VERDICTS[0]
        adapted = self.serving.get("adapter_on_old_index")
        if adapted is not None and adapted.ndcg_at_10 >= KEEP_SHARE * ceiling:
            return VERDICTS[1]
        return VERDICTS[2]


@dataclass(frozen=True)
class DriftReport:
    """Per-dataset drift from ``old`` to ``new``."""

    old: str
    new: str
    datasets: list[DatasetDrift]
    threshold: float = REINDEX_RECALL
    adapter: str | None = None
    adapter_texts: int = 0

    @property
    def min_recall(self) -> float | None:
        """The lowest recall@10 over retrieval datasets (None without any)."""
        recalls = [d.recall_at_10 for d in self.datasets if d.recall_at_10 is not None]
        return min(recalls) if recalls else None

    @property
    def rebuild_index(self) -> bool:
        """Whether an index built with OLD should be re-encoded with NEW: the :attr:`verdict` when
        the qrels were scored, else recall@10 against OLD's own top-10 below ``threshold``."""
        if self.verdict is not None:
            return self.verdict == VERDICTS[2]
        return self.min_recall is not None and self.min_recall < self.threshold

    @property
    def verdict(self) -> str | None:
        """The worst dataset's verdict (None without qrels scores)."""
        found = [d.verdict for d in self.datasets if d.verdict is not None]
        return max(found, key=VERDICTS.index) if found else None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        datasets = [asdict(d) | {"verdict": d.verdict} for d in self.datasets]
        return {**asdict(self), "datasets": datasets, "min_recall": self.min_recall,
                "rebuild_index": self.rebuild_index, "verdict": self.verdict}


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
    adapter: AdapterKind | None = None,
    save_adapter: str | Path | None = None,
    fit_limit: int | None = None,
    force: bool = False,
) -> DriftReport:
    """Compare OLD and NEW on every dataset of the corpus at ``data_dir``.

    OLD and NEW are local dirs or Hub ids (``org/name[@REV]``), checked by
    :func:`boom_merge.model_refs.check_model` (tokenizer present, weights finite) and loaded on
    ``device`` (default: cuda when available). ``data_dir`` is a built corpus (default: the
    default corpus); queries and documents are capped as in ``boom-merge eval`` (first
    ``max_queries`` queries, their relevant documents plus others up to ``max_corpus``).
    ``adapter`` (``orthogonal`` or ``affine``; default orthogonal when ``save_adapter`` is
    given) fits a query adapter on up to ``fit_limit`` texts of the corpus' train split;
    ``save_adapter`` writes it as a sentence-transformers model (NEW + Dense + Normalize).
    """
    check_limits(max_queries=max_queries, max_corpus=max_corpus, batch_size=batch_size)
    if save_adapter is not None:
        adapter = adapter or "orthogonal"
    corpus, splits, texts = read_drift_inputs(data_dir, max_queries=max_queries, max_corpus=max_corpus,
                                              fit=adapter is not None, fit_limit=fit_limit)
    if save_adapter is not None:
        from boom_merge.outputs import check_output

        check_output(save_adapter, inputs=(*_local(old_model, new_model), corpus), force=force)
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

    fitted = None
    if adapter is not None:
        logger.info("fitting a %s query adapter on %d train texts", adapter, len(texts))
        fitted = fit_adapter(encode(old, texts), encode(new, texts), kind=adapter)
    datasets = []
    for name, split in splits.items():
        logger.info("drift on %s", name)
        if isinstance(split, RetrievalSplit):
            queries = list(split.queries.values())
            docs = [f"{d['title']} {d['text']}".strip() for d in split.corpus.values()]
            datasets.append(
                retrieval_drift(
                    name, encode(old, queries), encode(new, queries), encode(old, docs), encode(new, docs),
                    qrels=[split.qrels[qid] for qid in split.queries], doc_ids=list(split.corpus), adapter=fitted,
                )
            )
        else:
            texts_sts = sorted(set(split.text1) | set(split.text2))
            datasets.append(_cosines(name, encode(old, texts_sts), encode(new, texts_sts), queries=0, recall=None))
    if save_adapter is not None and fitted is not None:  # last: a failure above leaves no adapter behind
        # what was read, as absolute paths (a Hub model's snapshot), as new_model: a push rewrites them alike
        info = {"old_model": str(resolve_model(old_model).path), "corpus": str(Path(corpus).resolve()),
                "fit_texts": len(texts)}
        save_adapter_model(resolve_model(new_model).path, fitted, save_adapter, force=force,
                           inputs=(*_local(old_model), corpus), info=info)
    return DriftReport(str(old_model), str(new_model), datasets, threshold, adapter, len(texts))


def read_drift_inputs(
    data_dir: str | Path | None, *, max_queries: int | None = 100, max_corpus: int | None = 1000,
    fit: bool = False, fit_limit: int | None = None,
) -> tuple[Path, dict[str, RetrievalSplit | STSPairs], list[str]]:
    """Everything a drift report reads from the corpus, read (and so checked) before anything is
    encoded or written: the corpus dir, each source's test split, and with ``fit`` up to
    ``fit_limit`` train texts an adapter is fitted on (else none)."""
    from boom_merge.incremental.adapter import DEFAULT_FIT_TEXTS

    corpus = find_corpus_dir(data_dir)
    splits: dict[str, RetrievalSplit | STSPairs] = {}
    for name, source in read_sources(corpus).items():
        splits[name] = (read_retrieval(corpus, name, max_queries=max_queries, max_corpus=max_corpus)
                        if source.task == "retrieval" else read_sts(sts_path(corpus, name)))
    texts = fit_texts(corpus, limit=fit_limit or DEFAULT_FIT_TEXTS) if fit else []
    return corpus, splits, texts


def _local(*specs: str | Path) -> list[Path]:
    """The local dirs among model specs (Hub ids are not paths an output could touch)."""
    return [Path(spec) for spec in specs if Path(spec).is_dir()]


def _load(spec: str | Path, device: str | None) -> SentenceTransformer:
    """A checked sentence-transformers model (a plain transformers dir would pool silently)."""
    resolved = resolve_model(spec)
    if not (resolved.path / "modules.json").is_file():
        raise BoomError("not a sentence-transformers model (no modules.json)", path=resolved.spec)
    return load_sentence_transformer(resolved, device=device)


def retrieval_drift(
    name: str, old_q: np.ndarray, new_q: np.ndarray, old_d: np.ndarray, new_d: np.ndarray, *,
    qrels: list[dict[str, int]] | None = None, doc_ids: list[str] | None = None, adapter: Adapter | None = None,
) -> DatasetDrift:
    """Drift from unit-norm embeddings of the same queries and documents.

    With ``qrels`` (one dict doc id -> relevance per query, in query order) and ``doc_ids``
    (the documents' ids in order), also each way of serving scored against the qrels.
    """
    k = min(K, len(old_d))
    index = old_d.T
    before = _top_k(old_q @ index, k)
    after = _top_k(new_q @ index, k)
    recall = _agreement(before, after, k)
    adapted_q = adapter.apply(new_q) if adapter is not None else None
    adapted = None if adapted_q is None else _agreement(before, _top_k(adapted_q @ index, k), k)
    serving = None
    if qrels is not None and doc_ids is not None:
        ways = {"old": (old_q, old_d), "new_on_old_index": (new_q, old_d), "reindexed": (new_q, new_d)}
        if adapted_q is not None:
            ways["adapter_on_old_index"] = (adapted_q, old_d)
        serving = {way: _serving(*ways[way], qrels, doc_ids) for way in SERVING if way in ways}
    drift = _cosines(name, np.vstack([old_q, old_d]), np.vstack([new_q, new_d]), queries=len(old_q), recall=recall)
    return replace(drift, adapted_recall_at_10=adapted, serving=serving)


def _agreement(before: np.ndarray, after: np.ndarray, k: int) -> float:
    return float(np.mean([len(set(b) & set(a)) / k for b, a in zip(before, after)]))


def _serving(queries: np.ndarray, docs: np.ndarray, qrels: list[dict[str, int]], doc_ids: list[str]) -> Serving:
    """recall@10 and nDCG@10 (gain = relevance, log2 discount; as pytrec_eval/MTEB) of a cosine ranking.

    Not sentence-transformers' ``InformationRetrievalEvaluator``: binary relevance, and it encodes the queries.
    """
    top = _top_k(queries @ docs.T, min(K, len(doc_ids)))
    recalls, ndcgs = [], []
    for ranking, relevance in zip(top, qrels):
        relevant = {doc: rel for doc, rel in relevance.items() if rel > 0}
        if not relevant:
            continue
        found = [relevant.get(doc_ids[i], 0) for i in ranking]
        recalls.append(sum(1 for rel in found if rel > 0) / len(relevant))
        dcg = sum(rel / np.log2(rank + 2) for rank, rel in enumerate(found))
        ideal = sum(rel / np.log2(rank + 2) for rank, rel in enumerate(sorted(relevant.values(), reverse=True)[:K]))
        ndcgs.append(dcg / ideal)
    return Serving(float(np.mean(recalls)) if recalls else 0.0, float(np.mean(ndcgs)) if ndcgs else 0.0)


def format_drift(report: DriftReport) -> str:
    """A plain-text table and a one-line verdict on re-encoding the index."""
    header = f"{'dataset':<16} {'texts':>6} {'mean cos':>9} {'p5 cos':>7} {'queries':>7} {'recall@10':>9}"
    lines = [f"Embedding drift: {report.old} -> {report.new}", header, "-" * len(header)]
    for d in report.datasets:
        recall = "n/a" if d.recall_at_10 is None else f"{d.recall_at_10:.3f}"
        lines.append(
            f"{d.dataset:<16} {d.texts:>6} {d.mean_cosine:>9.4f} {d.p5_cosine:>7.4f} {d.queries:>7} {recall:>9}"
        )
    lines += _serving_lines(report)
    if report.min_recall is None:
        lines.append("No retrieval data: recall@10 not measured.")
    elif report.verdict is not None:
        adapted = [d.adapted_recall_at_10 for d in report.datasets if d.adapted_recall_at_10 is not None]
        through = f", {min(adapted):.1%} through the adapter" if adapted else ""
        lines.append(f"Agreement with OLD's results: NEW queries find {report.min_recall:.1%} of OLD's top-10 on the "
                     f"worst dataset{through}.")
        lines.append(f"Verdict: {report.verdict} (kept when nDCG@10 on the OLD index is >= {KEEP_SHARE:.0%} of the "
                     "re-indexed ceiling on every dataset).")
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


def _serving_lines(report: DriftReport) -> list[str]:
    """The serving table (recall@10 / nDCG@10 against the qrels) and the verdict."""
    rows = [d for d in report.datasets if d.serving]
    if not rows:
        return []
    ways = [way for way in SERVING if any(way in d.serving for d in rows)]  # type: ignore[operator]
    fitted = (f"; adapter: {report.adapter}, fitted on {report.adapter_texts} train texts"
              if report.adapter else "; no adapter (--fit-adapter OUT to fit one)")
    lines = ["", f"Serving quality against the qrels, recall@10 / nDCG@10{fitted}:",
             f"{'dataset':<16} " + " ".join(f"{_SERVING_TEXT[way]:>23}" for way in ways) + "  verdict"]
    for d in rows:
        cells = [f"{d.serving[way].recall_at_10:.3f} / {d.serving[way].ndcg_at_10:.3f}"  # type: ignore[index]
                 if way in d.serving else "n/a" for way in ways]  # type: ignore[operator]
        lines.append(f"{d.dataset:<16} " + " ".join(f"{cell:>23}" for cell in cells) + f"  {d.verdict}")
    lines.append("")
    return lines


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
