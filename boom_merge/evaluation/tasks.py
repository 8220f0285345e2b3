"""MTEB task objects for the built corpus, and standard MTEB tasks and benchmarks by name.

Owns: :data:`KINDS` and the local MTEB task classes, and finding standard tasks. It never reads
corpus files itself (:mod:`.corpus` does) and never writes.

Each corpus source becomes a real ``mteb`` task whose ``load_data`` reads the local files
of one split (``test`` or ``dev``), so MTEB's own evaluators compute the scores and write
its result format. What a task kind is (its MTEB type, main metric, loader) is
:data:`KINDS`; what a source is (label, domains, licence) is its registry entry's
:class:`~boom_merge.data.corpora.common.MtebMeta`. mteb drops instance-level metadata
when it unloads a task, so each local task is a small generated subclass that carries
its ``TaskMetadata`` as a class attribute.

Standard tasks are looked up with ``mteb.get_benchmark`` (e.g. ``"MTEB(eng, v2)"``,
whose task objects carry the benchmark's split and subset choices) or ``mteb.get_task``.
:func:`task_info` is what evaluation records about every task (``summary.json``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from boom_merge.errors import BoomError
from boom_merge.evaluation.corpus import (
    BuiltSource,
    Split,
    capped_ids,
    read_retrieval,
    read_sources,
    read_sts,
    sts_path,
)

if TYPE_CHECKING:
    from mteb.abstasks import AbsTask

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Caps:
    """Limits on retrieval splits, for quick runs (None: no limit)."""

    max_queries: int | None = None
    max_corpus: int | None = None

    def __bool__(self) -> bool:
        return self.max_queries is not None or self.max_corpus is not None

    def to_dict(self) -> dict[str, int | None]:
        return {"max_queries": self.max_queries, "max_corpus": self.max_corpus}


@dataclass(frozen=True)
class Kind:
    """A task kind of the corpus: its MTEB type (also the task-name suffix), main metric, annotators."""

    mteb_type: str
    main_score: str
    annotations_creators: str


#: corpus task kind -> MTEB facts (the loaders are the mixins at the end of this module)
KINDS: dict[str, Kind] = {
    "retrieval": Kind("Retrieval", "ndcg_at_10", "derived"),
    "sts": Kind("STS", "cosine_spearman", "human-annotated"),
}


def dataset_of(task: AbsTask) -> str:
    """The dataset a task is tagged with: its corpus source, or the MTEB task name."""
    return getattr(task, "boom_source", task.metadata.name)


def is_local(task: AbsTask) -> bool:
    """True for a task built from the local corpus (not in mteb's registry)."""
    return hasattr(task, "boom_source")


def local_task_name(kind: str, label: str) -> str:
    """``Boom{label}{MTEB type}``, e.g. ``BoomWordNetRetrieval``."""
    return f"Boom{label}{KINDS[kind].mteb_type}"


def resolve_tasks(
    corpus_dir: Path | None,
    names: Sequence[str] | None,
    caps: Caps,
    *,
    split: Split = "test",
    cap_standard: bool = False,
) -> list[AbsTask]:
    """Build the tasks to run, with their data loaded (so offline failures show early).

    ``names`` may mix corpus source names (``wordnet``), local task names
    (``BoomWordNetRetrieval``), MTEB task names (``STS12``) and MTEB benchmark names
    (``MTEB(eng, v2)``); None means every source of the corpus that has ``split``.
    ``caps`` apply to local tasks, and to standard retrieval tasks when ``cap_standard``
    (those stay loaded, capped; other standard tasks are unloaded after the check).
    """
    local = local_tasks(corpus_dir, caps, split=split) if corpus_dir is not None else {}
    if names is None:
        if not local:
            raise BoomError(f"the corpus lists no source with a {split} split", path=corpus_dir)
        chosen = list(local.values())
    else:
        by_name = {**{t.metadata.name: t for t in local.values()}, **local}
        chosen = []
        for name in dict.fromkeys(names):
            found = [by_name[name]] if name in by_name else standard_tasks(name, corpus_dir, split)
            chosen += [task for task in found if task.metadata.name not in {t.metadata.name for t in chosen}]
    for task in chosen:
        _load(task)
        if is_local(task):
            continue
        if cap_standard and caps:
            cap_retrieval(task, caps)
        else:  # loaded only to fail early: mteb loads and unloads it again per task (memory stays bounded)
            task.unload_data()
    return chosen


def local_tasks(corpus_dir: Path, caps: Caps, *, split: Split = "test") -> dict[str, AbsTask]:
    """One MTEB task per source of the corpus that has ``split``, keyed by source name."""
    revision = hashlib.sha1((corpus_dir / "manifest.json").read_bytes()).hexdigest()[:12]
    revision += "" if split == "test" else f"-{split}"
    revision += "".join(f"-{key}{value}" for key, value in (("q", caps.max_queries), ("c", caps.max_corpus)) if value)
    return {
        name: make_task(source, corpus_dir, revision, caps, split)
        for name, source in read_sources(corpus_dir).items()
        if source.has_split(corpus_dir, split)
    }


def make_task(source: BuiltSource, corpus_dir: Path, revision: str, caps: Caps, split: Split = "test") -> AbsTask:
    """An MTEB task instance reading one source's ``split`` from ``corpus_dir``."""
    from mteb import TaskMetadata
    from mteb.abstasks import AbsTaskRetrieval, AbsTaskSTS

    kind = KINDS[source.task]
    retrieval = source.task == "retrieval"
    path = corpus_dir / split / source.name if retrieval else sts_path(corpus_dir, source.name)
    metadata = TaskMetadata(
        name=local_task_name(source.task, source.mteb.label),
        description=(
            f"boom-merge local corpus source {source.name!r} (domain: {source.domain or 'unknown'}; "
            f"licence: {source.licence or 'unknown'}): {'retrieval' if retrieval else 'graded similarity'} "
            f"{split} split."
        ),
        dataset={"path": str(path), "revision": revision},
        type=kind.mteb_type,
        category="t2t",
        eval_splits=[split],
        eval_langs=["eng-Latn"],
        main_score=kind.main_score,
        domains=list(source.mteb.domains) or None,
        license=source.mteb.licence,
        annotations_creators=kind.annotations_creators,
        sample_creation="found",
        bibtex_citation="",
    )
    base = _LocalRetrieval if retrieval else _LocalSTS
    attrs = {"metadata": metadata, "boom_source": source.name, "corpus_dir": corpus_dir, "caps": caps, "split": split}
    return type(metadata.name, (base, AbsTaskRetrieval if retrieval else AbsTaskSTS), attrs)()


def standard_tasks(name: str, corpus_dir: Path | None = None, split: Split = "test") -> list[AbsTask]:
    """The tasks of an MTEB benchmark, or one MTEB task, by name; BoomError if mteb knows neither."""
    import mteb

    try:
        return list(mteb.get_benchmark(name).tasks)
    except (KeyError, ValueError):
        pass
    try:
        return [mteb.get_task(name)]
    except (KeyError, ValueError):
        pass
    if corpus_dir is not None and name in read_sources(corpus_dir):
        raise BoomError(f"corpus source {name!r} has no {split} split", path=corpus_dir)
    raise BoomError(f"unknown task {name!r}: not a corpus source, a local task, an MTEB task or an MTEB benchmark")


def task_info(task: AbsTask, caps: Caps, cap_standard: bool) -> dict[str, Any]:
    """What evaluation records about a task (``summary.json`` ``tasks``): the card reads it."""
    from mteb.abstasks import AbsTaskRetrieval

    meta = task.metadata
    local = is_local(task)
    capped = caps and isinstance(task, AbsTaskRetrieval) and (local or cap_standard)  # caps cut retrieval only
    return {
        "name": meta.name,
        "source": dataset_of(task),
        "kind": "local" if local else "mteb",
        "type": meta.type,
        "hf_task_type": meta._hf_task_type()[0],
        "main_score": meta.main_score,
        "split": list(task.eval_splits)[0] if len(task.eval_splits) == 1 else list(task.eval_splits),
        "caps": caps.to_dict() if capped else None,
        "dataset": {"path": str(meta.dataset["path"]), "revision": meta.dataset.get("revision")},
        "domains": list(meta.domains or []),
        "license": meta.license,
    }


def cap_retrieval(task: AbsTask, caps: Caps) -> None:
    """Cap a loaded standard retrieval task's queries and corpus in place (as local tasks are)."""
    for subset in (task.dataset or {}).values():
        for data in subset.values():
            if not (isinstance(data, dict) and {"queries", "corpus", "relevant_docs"} <= data.keys()):
                continue
            queries, corpus = data["queries"], data["corpus"]
            kept_q, kept_d = capped_ids(list(queries["id"]), list(corpus["id"]), data["relevant_docs"],
                                        caps.max_queries, caps.max_corpus)
            keep_q, keep_d = set(kept_q), set(kept_d)
            data["queries"] = queries.select([i for i, qid in enumerate(queries["id"]) if qid in keep_q])
            data["corpus"] = corpus.select([i for i, doc in enumerate(corpus["id"]) if doc in keep_d])
            data["relevant_docs"] = {qid: data["relevant_docs"][qid] for qid in kept_q}
            if data.get("top_ranked"):
                data["top_ranked"] = {qid: data["top_ranked"][qid] for qid in kept_q if qid in data["top_ranked"]}


def _load(task: AbsTask) -> None:
    """Load a task's data now, so that a task whose data is unreachable fails early."""
    try:
        task.load_data()
    except BoomError:
        raise
    except Exception as error:  # datasets raises many types when the Hub is unreachable
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise BoomError(
            f"MTEB task {task.metadata.name}: data cannot be loaded (offline? {type(error).__name__}: {first})"
        ) from None


class _LocalRetrieval:
    """Mixin: ``load_data`` for a retrieval source (mixed before ``AbsTaskRetrieval``)."""

    boom_source: str
    corpus_dir: Path
    caps: Caps
    split: Split

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        from datasets import Dataset

        if self.data_loaded:
            return
        split = read_retrieval(
            self.corpus_dir,
            self.boom_source,
            max_queries=self.caps.max_queries,
            max_corpus=self.caps.max_corpus,
            split=self.split,
        )
        queries = Dataset.from_dict({"id": list(split.queries), "text": list(split.queries.values())})
        corpus = Dataset.from_dict(
            {
                "id": list(split.corpus),
                "title": [doc["title"] for doc in split.corpus.values()],
                "text": [doc["text"] for doc in split.corpus.values()],
            }
        )
        data = {"queries": queries, "corpus": corpus, "relevant_docs": split.qrels, "top_ranked": None}
        self.dataset = {"default": {self.split: data}}
        self.data_loaded = True


class _LocalSTS:
    """Mixin: ``load_data`` for a graded-similarity source (mixed before ``AbsTaskSTS``)."""

    boom_source: str
    corpus_dir: Path
    min_score = 0
    max_score = 10

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        from datasets import Dataset, DatasetDict

        if self.data_loaded:
            return
        path = sts_path(self.corpus_dir, self.boom_source)
        pairs = read_sts(path)
        if max(pairs.scores) > self.max_score or min(pairs.scores) < self.min_score:
            raise BoomError(f"scores must lie in [{self.min_score}, {self.max_score}]", path=path)
        test = Dataset.from_dict({"sentence1": pairs.text1, "sentence2": pairs.text2, "score": pairs.scores})
        self.dataset = {"default": DatasetDict({"test": test})}
        self.data_loaded = True
