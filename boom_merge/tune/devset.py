"""The dev data of one tuning search, prepared once: MTEB tasks, the racing slice, tokenization.

Owns: the dev tasks held for a whole search (full caps and the racing slice), which queries and
documents the slice keeps (and their texts per task, as the model reads them: ``DevSet.slice_texts``), the per-query scores recorded from MTEB, and the tokenization cache.
It never merges, selects, or writes files.

Everything here is the same for every candidate, so a search builds it once (:class:`DevSet`)
instead of once per candidate: the dev texts read from disk, the MTEB task objects with their
data and qrels loaded (computing the main score's cut-off only: :func:`_main_k`), and the tokenized batches (:func:`cache_tokenization`; every candidate
shares the members' tokenizer, and sentence-transformers batches texts by length, so a
candidate's batches are the previous candidate's, bit for bit).

The slice of a source is fixed and seeded: ``ceil(fraction * queries)`` queries drawn with
``random.Random(f"{seed}:{source}")`` (kept in file order), the documents relevant to them, and
seeded other documents up to ``ceil(fraction * documents)``; a subset of the full caps, so a
slice score estimates the full one on the same data.
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from boom_merge.errors import BoomError

if TYPE_CHECKING:
    from mteb.abstasks import AbsTask
    from sentence_transformers import SentenceTransformer

#: the files that make a tokenizer (and its length cap): equal files, equal tokenization
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json",
                    "sentencepiece.bpe.model", "spiece.model", "merges.txt", "vocab.json", "sentence_bert_config.json")


@dataclass(frozen=True)
class SliceSpec:
    """The racing slice: the share of each dev source's queries and documents, and its seed."""

    fraction: float = 0.25
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.fraction <= 1:
            raise BoomError(f"the racing slice must be a fraction in (0, 1], got {self.fraction}")

    @property
    def tag(self) -> str:
        """The slice's name in caches and reports, e.g. ``slice0.25s0``."""
        return f"slice{self.fraction:g}s{self.seed}"


class _PerQuery:
    """Mixin before a local retrieval task: keeps MTEB's per-query main scores (pytrec_eval's)."""

    per_query: dict[str, float]

    def task_specific_scores(self, scores: dict[str, dict[str, float]], *args: Any, **kwargs: Any) -> Any:
        k = self.metadata.main_score.rsplit("_at_", 1)[-1]  # type: ignore[attr-defined]  # ndcg_at_10 -> 10
        self.per_query = {qid: values[f"ndcg_cut_{k}"] for qid, values in scores.items()}
        return super().task_specific_scores(scores, *args, **kwargs)  # type: ignore[misc]


def _main_k(task: AbsTask) -> tuple[int, ...]:
    """The cut-offs a dev task computes: the main score's and 1 (MTEB's score dict reads Recall@1).

    MTEB computes every metric at k = 1, 3, 5, 10, 20, 100, 1000 and, for each, three nAUC
    abstention scores (105 sklearn AUCs per task; 30 with k = 1, 10), a fixed cost per task and
    candidate that no choice here reads. The ranking searched (``_top_k``, sized from the
    class's own k values) stays as it is, so the main score is the same number.
    """
    main = task.metadata.main_score
    return tuple(sorted({1, int(main.rsplit("_at_", 1)[1])})) if "_at_" in main else tuple(task.k_values)


def slice_ids(source: str, query_ids: Sequence[str], doc_ids: Sequence[str], qrels: dict[str, dict[str, int]],
              spec: SliceSpec) -> tuple[list[str], list[str]]:
    """The queries and documents of ``source``'s slice (module docstring), in their given order."""
    rng = random.Random(f"{spec.seed}:{source}")
    kept = set(rng.sample(range(len(query_ids)), max(1, math.ceil(spec.fraction * len(query_ids)))))
    queries = [qid for i, qid in enumerate(query_ids) if i in kept]
    relevant = {doc for qid in queries for doc, score in qrels[qid].items() if score > 0}
    others = [doc for doc in doc_ids if doc not in relevant]
    room = max(0, math.ceil(spec.fraction * len(doc_ids)) - len(relevant))
    extra = {others[i] for i in rng.sample(range(len(others)), min(room, len(others)))}
    return queries, [doc for doc in doc_ids if doc in relevant or doc in extra]


class DevSet:
    """The dev tasks of one search: full caps and the slice, loaded once (``sides``: ID/OOD source names)."""

    def __init__(self, corpus: Path, sides: dict[str, Sequence[str]], *, max_queries: int | None,
                 max_corpus: int | None, spec: SliceSpec) -> None:
        from boom_merge.evaluation.tasks import Caps, local_tasks

        start = time.perf_counter()
        available = local_tasks(corpus, Caps(max_queries, max_corpus), split="dev")
        self.side_of: dict[str, str] = {}
        self.full: list[AbsTask] = []
        self.slice: list[AbsTask] = []
        for side, names in sides.items():
            for name in names:
                if name not in available:
                    raise BoomError(f"no dev split of {name}", path=corpus / "dev")
                recording = type(type(available[name]).__name__, (_PerQuery, type(available[name])), {})
                full, cheap = recording(), recording()
                full.load_data()
                for task in (full, cheap):  # after __init__, which sized the search (_top_k) from the class's k
                    task.k_values = _main_k(task)
                self.full.append(full)
                self.slice.append(_sliced(cheap, full, name, spec))
                self.side_of[full.metadata.name] = side
        self.slice_texts = {task.metadata.name: frozenset(_texts(task)) for task in self.slice}
        self.prepare_s = time.perf_counter() - start

    def tasks(self, stage: str) -> list[AbsTask]:
        """The tasks of ``stage`` (``full`` or ``slice``)."""
        return self.full if stage == "full" else self.slice


def _sliced(task: AbsTask, full: AbsTask, source: str, spec: SliceSpec) -> AbsTask:
    """``task`` holding the slice of ``full``'s loaded data."""
    split = full.metadata.eval_splits[0]
    data = full.dataset["default"][split]
    queries, docs = slice_ids(source, list(data["queries"]["id"]), list(data["corpus"]["id"]),
                              data["relevant_docs"], spec)
    keep_q, keep_d = set(queries), set(docs)
    task.dataset = {"default": {split: {
        "queries": data["queries"].select([i for i, q in enumerate(data["queries"]["id"]) if q in keep_q]),
        "corpus": data["corpus"].select([i for i, d in enumerate(data["corpus"]["id"]) if d in keep_d]),
        "relevant_docs": {qid: data["relevant_docs"][qid] for qid in queries},
        "top_ranked": None,
    }}}
    task.data_loaded = True
    return task


def _texts(task: AbsTask) -> list[str]:
    """The texts of ``task``'s queries and documents as the model reads them (MTEB's own function)."""
    from mteb._create_dataloaders import _retrieval_texts
    from mteb.types import PromptType

    data = task.dataset["default"][task.metadata.eval_splits[0]]
    return [*_retrieval_texts(data["queries"], PromptType.query), *_retrieval_texts(data["corpus"], PromptType.document)]


def tokenizer_fingerprint(model_dir: Path) -> str:
    """A hash of the files that make ``model_dir``'s tokenizer and its length cap."""
    digest = hashlib.sha1()
    for folder in (model_dir, *sorted(p for p in model_dir.iterdir() if p.is_dir())):
        for name in _TOKENIZER_FILES:
            if (folder / name).is_file():
                digest.update(f"{folder.name}/{name}".encode() + (folder / name).read_bytes())
    return digest.hexdigest()


class TokenCache:
    """Tokenized batches per tokenizer (by :func:`tokenizer_fingerprint`), shared by every candidate
    that has that tokenizer; ``seconds`` sums the tokenization actually done (cache misses)."""

    def __init__(self) -> None:
        self.batches: dict[str, dict[tuple, dict[str, Any]]] = {}
        self.seconds = 0.0

    def attach(self, model: SentenceTransformer, model_dir: Path) -> None:
        """Route ``model.preprocess`` through the cache of ``model_dir``'s tokenizer."""
        batches = self.batches.setdefault(tokenizer_fingerprint(model_dir), {})
        own = model.preprocess

        def preprocess(inputs: Sequence[Any], prompt: str | None = None, **kwargs: Any) -> dict[str, Any]:
            options = tuple(sorted(kwargs.items()))
            if not all(isinstance(v, (str, type(None))) for _, v in options) or \
                    not all(isinstance(text, str) for text in inputs):
                return own(inputs, prompt=prompt, **kwargs)
            key = (prompt, options, *inputs)
            if key not in batches:
                start = time.perf_counter()
                batches[key] = own(inputs, prompt=prompt, **kwargs)
                self.seconds += time.perf_counter() - start
            return dict(batches[key])  # the model adds outputs to the dict it gets: a fresh one each time

        model.preprocess = preprocess  # type: ignore[method-assign]
