"""MTEB task objects for the built corpus, and standard MTEB tasks by name.

Each corpus source becomes a real ``mteb`` task (``AbsTaskRetrieval`` with nDCG@10 or
``AbsTaskSTS`` with Spearman) whose ``load_data`` reads the local files, so MTEB's own
evaluators compute the scores and write its result format. mteb drops instance-level
metadata when it unloads a task, so each task is a small generated subclass that
carries its ``TaskMetadata`` as a class attribute.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

from boom_merge.errors import BoomError
from boom_merge.evaluation.corpus import Source, read_retrieval, read_sources, read_sts, sts_path

if TYPE_CHECKING:
    from mteb.abstasks import AbsTask

logger = logging.getLogger(__name__)

_PUBLIC_DOMAIN = "https://creativecommons.org/publicdomain/mark/1.0/"
_PSF = "https://docs.python.org/3/license.html"

# name -> (label in task names, MTEB domains, MTEB licence) for the sources we build.
_KNOWN: dict[str, tuple[str, list[str], str]] = {
    "wordnet": ("WordNet", ["Written"], "https://wordnet.princeton.edu/license-and-commercial-use"),
    "foldoc": ("Foldoc", ["Engineering", "Written"], "https://www.gnu.org/licenses/fdl-1.3.html"),
    "manpages": ("ManPages", ["Programming", "Written"], "multiple"),
    "bible_kjv_web": ("BibleKjvWeb", ["Religious", "Written"], _PUBLIC_DOMAIN),
    "python_code": ("PythonCode", ["Programming"], _PSF),
    "python_faq": ("PythonFaq", ["Programming", "Written"], _PSF),
    "devil": ("Devil", ["Fiction", "Written"], _PUBLIC_DOMAIN),
    "wordsim353": ("WordSim353", ["Written"], "not specified"),
}


@dataclass(frozen=True)
class Caps:
    """Limits on the local test splits, for quick runs (None: no limit)."""

    max_queries: int | None = None
    max_corpus: int | None = None


def dataset_of(task: AbsTask) -> str:
    """The dataset name a task is tagged with for in-domain checks.

    A local task carries its corpus source name; a standard MTEB task is its own name.
    """
    return getattr(task, "boom_source", task.metadata.name)


def resolve_tasks(corpus_dir: Path | None, names: Sequence[str] | None, caps: Caps) -> list[AbsTask]:
    """Build the tasks to run, with their data loaded (so offline failures show early).

    ``names`` may mix corpus source names (``wordnet``), local task names
    (``BoomWordNetRetrieval``) and standard MTEB task names; None means every source
    of the corpus.
    """
    local = local_tasks(corpus_dir, caps) if corpus_dir is not None else {}
    if names is None:
        if not local:
            raise BoomError("the corpus lists no sources", path=corpus_dir)
        chosen = list(local.values())
    else:
        by_name = {**{t.metadata.name: t for t in local.values()}, **local}
        chosen = [by_name.get(name) or standard_task(name) for name in dict.fromkeys(names)]
    for task in chosen:
        _load(task)
    return chosen


def local_tasks(corpus_dir: Path, caps: Caps) -> dict[str, AbsTask]:
    """One MTEB task per source of the corpus, keyed by source name."""
    revision = hashlib.sha1((corpus_dir / "manifest.json").read_bytes()).hexdigest()[:12]
    revision += "".join(f"-{key}{value}" for key, value in (("q", caps.max_queries), ("c", caps.max_corpus)) if value)
    return {
        name: make_task(source, corpus_dir, revision, caps) for name, source in read_sources(corpus_dir).items()
    }


def make_task(source: Source, corpus_dir: Path, revision: str, caps: Caps) -> AbsTask:
    """An MTEB task instance reading one source's test split from ``corpus_dir``."""
    from mteb.abstasks import AbsTaskRetrieval, AbsTaskSTS

    label, domains, licence = _KNOWN.get(source.name, (_camel(source.name), None, _mteb_licence(source.licence)))
    retrieval = source.task == "retrieval"
    metadata = _metadata(
        name=f"Boom{label}{'Retrieval' if retrieval else 'STS'}",
        source=source,
        path=corpus_dir / "test" / source.name if retrieval else sts_path(corpus_dir, source.name),
        revision=revision,
        domains=domains,
        licence=licence,
    )
    base = _LocalRetrieval if retrieval else _LocalSTS
    attrs = {"metadata": metadata, "boom_source": source.name, "corpus_dir": corpus_dir, "caps": caps}
    return type(metadata.name, (base, AbsTaskRetrieval if retrieval else AbsTaskSTS), attrs)()


def standard_task(name: str) -> AbsTask:
    """A standard MTEB task by name; BoomError if mteb does not know it."""
    import mteb

    try:
        return mteb.get_task(name)
    except (KeyError, ValueError):
        raise BoomError(f"unknown task {name!r}: not a corpus source, a local task or an MTEB task") from None


def _load(task: AbsTask) -> None:
    """Load a task's data now, so that a task whose data is unreachable fails early."""
    try:
        task.load_data()
    except BoomError:
        raise
    except Exception as error:  # datasets raises many types when the Hub is unreachable
        raise BoomError(
            f"MTEB task {task.metadata.name}: data cannot be loaded (offline? {type(error).__name__}: {error})"
        ) from None


def _metadata(
    *, name: str, source: Source, path: Path, revision: str, domains: list[str] | None, licence: str
) -> Any:
    from mteb import TaskMetadata

    retrieval = source.task == "retrieval"
    return TaskMetadata(
        name=name,
        description=(
            f"boom-merge local corpus source {source.name!r} (domain: {source.domain or 'unknown'}; "
            f"licence: {source.licence or 'unknown'}): {'retrieval' if retrieval else 'graded similarity'} test split."
        ),
        dataset={"path": str(path), "revision": revision},
        type="Retrieval" if retrieval else "STS",
        category="t2t",
        eval_splits=["test"],
        eval_langs=["eng-Latn"],
        main_score="ndcg_at_10" if retrieval else "cosine_spearman",
        domains=domains,
        license=licence,
        annotations_creators="derived" if retrieval else "human-annotated",
        sample_creation="found",
        bibtex_citation="",
    )


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.replace("-", "_").split("_"))


def _mteb_licence(licence: str) -> str:
    """The manifest licence if MTEB accepts it (its identifiers or a URL), else "not specified"."""
    from mteb.types._metadata import Licenses

    value = licence.strip().lower()
    if value in get_args(Licenses) or value.startswith(("http://", "https://")):
        return value
    return "not specified"


class _LocalRetrieval:
    """Mixin: ``load_data`` for a retrieval source (mixed before ``AbsTaskRetrieval``)."""

    boom_source: str
    corpus_dir: Path
    caps: Caps

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        from datasets import Dataset

        if self.data_loaded:
            return
        split = read_retrieval(
            self.corpus_dir, self.boom_source, max_queries=self.caps.max_queries, max_corpus=self.caps.max_corpus
        )
        queries = Dataset.from_dict({"id": list(split.queries), "text": list(split.queries.values())})
        corpus = Dataset.from_dict(
            {
                "id": list(split.corpus),
                "title": [doc["title"] for doc in split.corpus.values()],
                "text": [doc["text"] for doc in split.corpus.values()],
            }
        )
        test = {"queries": queries, "corpus": corpus, "relevant_docs": split.qrels, "top_ranked": None}
        self.dataset = {"default": {"test": test}}
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
