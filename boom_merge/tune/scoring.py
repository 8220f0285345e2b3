"""Which dev splits judge a tuning run, and the scorer that runs MTEB on them.

Owns: which dev splits judge and the dev scorer.

ID dev = the dev splits of the training domains (``--in-domain``, else the datasets in
the members' lineage); OOD dev = the corpus's OOD dev sources (manifest role
``ood_dev``). OOD *test* sources have no dev split and are never read here.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from boom_merge.errors import BoomError
from boom_merge.lineage import training_datasets
from boom_merge.tune.devset import DevSet, SliceSpec, TokenCache
from boom_merge.tune.encodings import EncodingCache
from boom_merge.tune.select import Scores

#: a scorer maps a merged model dir to its dev scores
Scorer = Callable[[Path], Scores]
#: 2: each encode call split into the slice's texts and the rest (:mod:`.encodings`; other rounding than 1's);
#: 3: candidates merged in the members' dtype, no longer always float32 (a bf16 search scored other models);
#: 4: slice membership per task (:mod:`.encodings`; other rounding than 3's where dev sources share a text)
_FINGERPRINT_VERSION = 4


@dataclass(frozen=True)
class DevTasks:
    """Corpus source names whose dev splits are scored."""

    in_domain: tuple[str, ...]
    out_of_domain: tuple[str, ...]


def _manifest(corpus: Path) -> dict[str, Any]:
    path = corpus / "manifest.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BoomError("not a built corpus (no manifest.json); run `boom-merge data build`", path=corpus) from None
    except (OSError, json.JSONDecodeError) as error:
        raise BoomError(f"unreadable corpus manifest ({error})", path=path) from None


def dev_splits(corpus: Path) -> frozenset[str]:
    """The sources whose dev split may judge (``tune`` and ``--update-weight auto`` alike): listed in the manifest,
    with ``dev/NAME`` (a folder the manifest does not list is no task: ``evaluation.tasks.local_tasks``)."""
    return frozenset(name for name in _manifest(corpus).get("sources", {}) if (corpus / "dev" / name).is_dir())


def dev_tasks(corpus: Path, members: Sequence[Path], in_domain: Sequence[str] | None, *, need_ood: bool) -> DevTasks:
    """The ID and OOD dev sources of ``corpus`` for ``members``; BoomError when one side is missing."""
    manifest, with_dev = _manifest(corpus), dev_splits(corpus)
    wanted = set(in_domain) if in_domain else {name for member in members for name in training_datasets(member) or ()}
    missing = sorted(wanted - with_dev)
    if in_domain and missing:
        raise BoomError(f"no dev split for --in-domain {', '.join(missing)}", path=corpus / "dev")
    id_dev = tuple(sorted(wanted & with_dev))
    if not id_dev:
        raise BoomError("no dev split of a training domain (build the corpus with dev splits, "
                        "or name the domains with --in-domain)", path=corpus)
    ood_roles = manifest.get("roles", {}).get("ood_dev", [])
    ood_dev = tuple(name for name in ood_roles if name in with_dev and name not in id_dev)
    if need_ood and not ood_dev:
        raise BoomError("no OOD dev source with a dev split (build jargon, vera, gcide or python_api), "
                        "or use --objective id", path=corpus)
    return DevTasks(id_dev, ood_dev)


def _stat(model: Path) -> list[Any]:
    return sorted([f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in model.glob("*.safetensors"))


def setup_fingerprint(members: Sequence[Path], base: Path, corpus: Path, tasks: DevTasks,
                      max_queries: int | None, max_corpus: int | None) -> dict[str, Any]:
    """What a cached score depends on (paths, weight files' size and mtime, corpus, tasks, caps)."""
    return {
        "version": _FINGERPRINT_VERSION,
        "members": [[str(m.resolve()), _stat(m)] for m in members],
        "base": [str(base.resolve()), _stat(base)],
        "corpus": str(corpus.resolve()),
        "corpus_manifest_sha1": hashlib.sha1((corpus / "manifest.json").read_bytes()).hexdigest(),
        "in_domain": list(tasks.in_domain),
        "out_of_domain": list(tasks.out_of_domain),
        "max_queries": max_queries,
        "max_corpus": max_corpus,
    }


class DevScorer:
    """Scores a model on the dev splits with MTEB: the full caps (``scorer(model)``) or the racing
    slice (``scorer.slice(model)``); the tasks, texts, qrels and tokenization are held for the search.

    Each task runs through MTEB's own evaluator (``task.evaluate``: encoding, search, pytrec_eval),
    the step ``mteb.evaluate`` runs per task; what is skipped is its per-candidate bookkeeping
    (result files, model meta, summary, chart), which decides nothing here. The scores equal
    :func:`boom_merge.evaluation.evaluate_models`' (``tests/test_tune.py`` checks it). Each
    :class:`Scores` carries per-query scores (for racing margins) and a profile in seconds:
    ``load`` (check and load the model), ``tokenize`` (cache misses), ``encode`` (the forward
    passes), ``scoring`` (similarity search and pytrec_eval's metrics), ``mteb`` (the rest of
    ``task.evaluate``: data loaders, dataset conversion, bookkeeping).

    With a candidate ``key`` (racing), the slice stage keeps the candidate's embeddings and its full
    stage encodes only the texts the slice did not (:mod:`.encodings`; the same numbers either way).
    """

    def __init__(self, corpus: Path, tasks: DevTasks, *, max_queries: int | None, max_corpus: int | None,
                 device: str | None = None, batch_size: int = 32, spec: SliceSpec = SliceSpec()) -> None:
        self.corpus, self.dev_tasks, self.spec = corpus, tasks, spec
        self.max_queries, self.max_corpus, self.device, self.batch_size = max_queries, max_corpus, device, batch_size
        self._devset: DevSet | None = None
        self.tokens = TokenCache()
        self._encodings: EncodingCache | None = None

    @property
    def devset(self) -> DevSet:
        """The dev tasks, built on first use (once per search)."""
        if self._devset is None:
            self._devset = DevSet(self.corpus, {"id": self.dev_tasks.in_domain, "ood": self.dev_tasks.out_of_domain},
                                  max_queries=self.max_queries, max_corpus=self.max_corpus, spec=self.spec)
        return self._devset

    @property
    def encodings(self) -> EncodingCache:
        """The search's embeddings kept between stages (``encoded``: texts encoded so far)."""
        if self._encodings is None:
            self._encodings = EncodingCache(self.devset.slice_texts)
        return self._encodings

    def slice_queries(self) -> int:
        """The fewest queries of a dev source in the racing slice (racing's margin needs two)."""
        return min(len(task.dataset["default"][task.metadata.eval_splits[0]]["queries"]) for task in self.devset.slice)

    def __call__(self, model: Path, *, key: str | None = None) -> Scores:
        return self.score(model, "full", key=key)

    def slice(self, model: Path, *, key: str | None = None) -> Scores:
        """Scores on the racing slice."""
        return self.score(model, "slice", key=key)

    def score(self, model: Path, stage: str, *, key: str | None = None) -> Scores:
        """Scores of ``model`` on the ``full`` caps or the ``slice``, with per-query scores and a profile;
        ``key``: the candidate's, so that its full stage reuses its slice stage's embeddings."""
        from mteb.models.sentence_transformer_wrapper import SentenceTransformerEncoderWrapper
        from mteb.timing import TimingStack

        from boom_merge.evaluation.summary import ID_AVG, OOD_AVG, split_averages
        from boom_merge.model_refs import load_sentence_transformer

        devset = self.devset
        start = time.perf_counter()
        loaded = load_sentence_transformer(Path(model), device=self.device)
        self.tokens.attach(loaded, Path(model))
        self.encodings.attach(loaded, key, keep=stage == "slice")
        encoder = SentenceTransformerEncoderWrapper(loaded)
        encoding = _timed(encoder)
        profile = {"load": time.perf_counter() - start}
        tokenized, timer = self.tokens.seconds, TimingStack()
        scores: dict[str, float] = {}
        per_query: dict[str, dict[str, dict[str, float]]] = {"id": {}, "ood": {}}
        evaluating = time.perf_counter()
        for task in devset.tasks(stage):
            split = task.metadata.eval_splits[0]
            self.encodings.task = task.metadata.name  # the slice membership and kept groups of this task
            result = task.evaluate(encoder, split, encode_kwargs={"batch_size": self.batch_size,
                                                                  "show_progress_bar": False}, timer=timer)
            name = task.metadata.name
            scores[name] = float(result["default"]["main_score"])
            per_query[devset.side_of[name]][name] = dict(getattr(task, "per_query", {}))  # retrieval tasks only
        total = time.perf_counter() - evaluating
        if key is not None and stage == "full":
            self.encodings.forget(key)
        phase = {name: sum(p["end"] - p["start"] for p in timer.phases if p["name"] == name)
                 for name in ("Encoding queries", "Searching corpus", "Scoring")}
        profile["tokenize"] = self.tokens.seconds - tokenized
        profile["encode"] = encoding[0] - profile["tokenize"]
        # similarity search: the search phases less the corpus encoding inside them
        search = max(0.0, phase["Encoding queries"] + phase["Searching corpus"] - encoding[0])
        profile["scoring"] = search + phase["Scoring"]
        profile["mteb"] = max(0.0, total - encoding[0] - profile["scoring"])
        averages = split_averages(scores, list(per_query["id"]), list(per_query["ood"]))
        return Scores(averages[ID_AVG], averages[OOD_AVG], scores, per_query=per_query,
                      profile={k: round(v, 3) for k, v in profile.items()})


def _timed(encoder: Any) -> list[float]:
    """Route ``encoder.encode`` through a clock; the returned list's one item sums its seconds."""
    seconds = [0.0]
    own = encoder.encode

    def encode(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return own(*args, **kwargs)
        finally:
            seconds[0] += time.perf_counter() - start

    encoder.encode = encode
    return seconds


def dev_scorer(corpus: Path, tasks: DevTasks, *, max_queries: int | None, max_corpus: int | None,
               device: str | None = None, batch_size: int = 32, spec: SliceSpec = SliceSpec()) -> DevScorer:
    """The dev scorer of a search: the dev set is built on its first score and held to the end."""
    return DevScorer(corpus, tasks, max_queries=max_queries, max_corpus=max_corpus, device=device,
                     batch_size=batch_size, spec=spec)
