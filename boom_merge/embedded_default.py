"""Steps shared by the quickstart and the study (``benchmarks/quality.py``).

Owns: the embedded default's domain lists and ratios, its built corpus, a training-data directory
holding chosen domains of a built corpus, a base copied with its Hub id (the quickstart's) or
re-saved with today's sentence-transformers (the study's, to change its truncation), which member
of a ratio spec is the full-data (BLS) model. It may not train, merge or evaluate
(``training``, ``merging`` and ``evaluation`` do); it only arranges their inputs and reads
their numbers.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from boom_merge.errors import BoomError
from boom_merge.lineage import full_data_index
from boom_merge.outputs import atomic_output_dir

#: the four training domains of the embedded default
TRAIN_DOMAINS = ("wordnet", "foldoc", "manpages", "bible_kjv_web")
#: held-out test sources (read once, at the end; never used for a choice)
OOD_SOURCES = ("devil", "python_faq", "wordsim353")
#: out-of-domain *dev* sources: neither training domains nor OOD tests; choices (tuning) only
OOD_DEV_SOURCES = ("jargon", "vera", "gcide", "python_api")
#: the BOOM bag of the embedded default; its 100 % member is the BLS model
RATIOS = "40,60,80,100"


def planned_full_data_member(ratios: str) -> int:
    """Index of the member that trains on all the data (the BLS model) in ``ratios``."""
    from boom_merge.data.sampling import plan_members

    specs = plan_members(ratios, seed=0)
    full = full_data_index((spec.ratio, spec.mode) for spec in specs)
    if full is None:
        raise BoomError(f"ratio spec {ratios!r} has no 100 % member (the BLS model)")
    return specs[full].index


def installed_corpus(sources: Sequence[str], *, max_train: int | None, max_test_queries: int | None) -> Any:
    """The built corpus of ``sources`` (the builder caches it); a source not installed is refused."""
    from boom_merge.data.corpora import build_corpora

    corpus = build_corpora(sources=sources, seed=0, max_train=max_train, max_test_queries=max_test_queries)
    if missing := [name for name in sources if name in corpus.missing]:
        raise BoomError(f"sources not installed: {', '.join(missing)}; run scripts/install-data-sources.sh")
    return corpus


def training_data_dir(corpus: str | Path, target: str | Path, domains: Sequence[str]) -> Path:
    """``target``: a training data directory holding only ``domains`` of a built corpus."""
    corpus, target = Path(corpus), Path(target)
    sources = [corpus / "train" / f"{name}.jsonl" for name in domains]
    for name, source in zip(domains, sources, strict=True):
        if not source.is_file():
            raise BoomError(f"training domain {name!r} was not built; see `boom-merge data list`", path=source)
    target.mkdir(parents=True, exist_ok=True)
    for source in sources:
        shutil.copy2(source, target / source.name)
    return target


def resave_model(
    source: str | Path, target: str | Path, *, max_seq_length: int | None = None, hub_id: str | None = None
) -> Path:
    """``target``: ``source`` as today's sentence-transformers saves it (once).

    Not needed for a base saved by an old version (the bundled MiniLM's ``embeddings.position_ids``
    is left out wherever models are compared or merged; see :mod:`boom_merge.merge.model_class`);
    ``max_seq_length`` changes only the truncation (weights unchanged). The copy keeps the
    Hub id ``source`` carries (or ``hub_id``, for a copy of a Hub model shipped otherwise).
    """
    from sentence_transformers import SentenceTransformer

    target = Path(target)
    if not (target / "modules.json").is_file():
        model = SentenceTransformer(str(source), device="cpu")
        if max_seq_length is not None:
            model.max_seq_length = max_seq_length
        with atomic_output_dir(target, inputs=[source], force=target.exists()) as tmp:
            model.save(str(tmp))
            keep_hub_identity(source, tmp, hub_id=hub_id)
    return target


def hub_copy(source: str | Path, target: str | Path, *, hub_id: str | None = None) -> Path:
    """``target``: ``source``'s files unchanged (once), keeping the Hub id it carries (or ``hub_id``).

    Not a re-save: a Hub base as served (the bundled MiniLM's ``embeddings.position_ids``
    included) is read beside members trained today as it is.
    """
    from boom_merge.model_refs import resolve_model

    target = Path(target)
    if not (target / "modules.json").is_file():
        with atomic_output_dir(target, inputs=[source], force=target.exists()) as tmp:
            shutil.copytree(resolve_model(source).path, tmp, dirs_exist_ok=True)
            keep_hub_identity(source, tmp, hub_id=hub_id)
    return target


def keep_hub_identity(source: str | Path, copy: Path, *, hub_id: str | None = None) -> None:
    """A copy of a Hub model (or of a copy of one) keeps that model's id and commit in its lineage."""
    from boom_merge.lineage import hub_bases, write_source
    from boom_merge.model_refs import resolve_model

    resolved = resolve_model(source)
    bases = [resolved.hub_id or hub_id] if resolved.hub_id or hub_id else hub_bases(resolved.path)
    if len(bases) == 1:
        write_source(copy, hub_id=bases[0], revision=resolved.revision, source=str(source))
