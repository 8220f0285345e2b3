"""Which dev splits judge a tuning run, and the scorer that runs MTEB on them.

Owns: which dev splits judge and the dev scorer.

ID dev = the dev splits of the training domains (``--in-domain``, else the datasets in
the members' lineage); OOD dev = the corpus's OOD dev sources (manifest role
``ood_dev``). OOD *test* sources have no dev split and are never read here.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from boom_merge.errors import BoomError
from boom_merge.tune.select import Scores

#: a scorer maps a merged model dir to its dev scores
Scorer = Callable[[Path], Scores]
_FINGERPRINT_VERSION = 1


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


def dev_tasks(corpus: Path, members: Sequence[Path], in_domain: Sequence[str] | None, *, need_ood: bool) -> DevTasks:
    """The ID and OOD dev sources of ``corpus`` for ``members``; BoomError when one side is missing."""
    from boom_merge.lineage import training_datasets

    manifest = _manifest(corpus)
    with_dev = {name for name in manifest.get("sources", {}) if (corpus / "dev" / name).is_dir()}
    if in_domain:
        wanted: set[str] = set(in_domain)
    else:
        wanted = set()
        for member in members:
            wanted |= set(training_datasets(member) or ())
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


def dev_scorer(corpus: Path, tasks: DevTasks, *, work: Path, max_queries: int | None, max_corpus: int | None,
               device: str | None = None, batch_size: int = 32) -> Scorer:
    """A scorer running :func:`boom_merge.evaluation.evaluate_models` on the dev splits."""
    from boom_merge.evaluation import evaluate_models
    from boom_merge.evaluation.summary import ID_AVG, OOD_AVG

    def score(model: Path) -> Scores:
        out = work / "eval"
        shutil.rmtree(out, ignore_errors=True)
        try:
            summary = evaluate_models(
                [model], out, corpus=corpus, split="dev", tasks=[*tasks.in_domain, *tasks.out_of_domain],
                in_domain=list(tasks.in_domain), max_queries=max_queries, max_corpus=max_corpus,
                labels=["candidate"], progress=False, device=device, batch_size=batch_size,
            )
        finally:
            shutil.rmtree(out, ignore_errors=True)
        return Scores(summary.value("candidate", ID_AVG), summary.value("candidate", OOD_AVG),
                      dict(summary.scores["candidate"]))

    return score
