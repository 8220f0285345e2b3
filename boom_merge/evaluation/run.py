"""``boom-merge eval``: run MTEB on several models, save results, summarise, chart."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from boom_merge.errors import BoomError
from boom_merge.evaluation.corpus import check_limits, find_corpus_dir
from boom_merge.evaluation.summary import Summary, plot_scores, to_markdown
from boom_merge.evaluation.tasks import Caps, dataset_of, resolve_tasks
from boom_merge.lineage import training_datasets
from boom_merge.outputs import atomic_output_dir

if TYPE_CHECKING:
    from mteb.abstasks import AbsTask
    from mteb.models.abs_encoder import AbsEncoder

logger = logging.getLogger(__name__)

def evaluate_models(
    models: Sequence[str | Path],
    out: str | Path,
    *,
    corpus_dir: str | Path | None = None,
    tasks: Sequence[str] | None = None,
    in_domain: Sequence[str] | None = None,
    max_queries: int | None = None,
    max_corpus: int | None = None,
    batch_size: int = 32,
    force: bool = False,
    progress: bool = True,
    labels: Sequence[str] | None = None,
    ensembles: Mapping[str, Sequence[str | Path]] | None = None,
) -> Summary:
    """Evaluate ``models`` with MTEB and write results and summary under ``out``.

    ``out`` receives ``results/`` (MTEB's ResultCache layout: one folder per model,
    named ``boom-merge__LABEL/local``), ``summary.md``, ``summary.json`` and
    ``scores.png``. ``in_domain`` (dataset or task names) overrides the training
    datasets read from the models. ``labels`` name the models in tables and charts
    (default: their directory names, made unique). ``ensembles`` adds rows, label ->
    member model dirs, each the embedding ensemble of its members
    (:class:`~boom_merge.evaluation.ensemble.EnsembleEncoder`). Returns the summary.
    """
    paths = [_model_dir(model) for model in models]
    groups = {label: [_model_dir(model) for model in members] for label, members in (ensembles or {}).items()}
    if not paths and not groups:
        raise BoomError("give at least one model")
    if not all(groups.values()):
        raise BoomError("every ensemble needs at least one member model")
    check_limits(max_queries=max_queries, max_corpus=max_corpus, batch_size=batch_size)
    corpus = find_corpus_dir(corpus_dir, required=tasks is None)
    chosen = resolve_tasks(corpus, tasks, Caps(max_queries, max_corpus))
    if labels is not None and (len(labels) != len(paths) or len(set(labels)) != len(labels)):
        raise BoomError("give one distinct label per model")
    labels = list(labels) if labels is not None else unique_labels(paths)
    if set(labels) & set(groups):
        raise BoomError("ensemble labels must differ from model labels")
    rows = {label: [path] for label, path in zip(labels, paths)} | groups
    inputs = [*paths, *(member for members in groups.values() for member in members), corpus]
    with atomic_output_dir(out, force=force, inputs=inputs) as tmp:
        scores = {
            label: _run_model(_encoder(members, label, label in groups), label, chosen, tmp, batch_size, progress)
            for label, members in rows.items()
        }
        summary = _summarise(list(rows), list(rows.values()), chosen, scores, in_domain)
        (tmp / "summary.md").write_text(to_markdown(summary), encoding="utf-8")
        model_paths = {label: str(members[0]) if label not in groups else list(map(str, members))
                       for label, members in rows.items()}
        (tmp / "summary.json").write_text(
            json.dumps({**summary.to_dict(), "model_paths": model_paths}, indent=2), encoding="utf-8"
        )
        plot_scores(summary, tmp / "scores.png")
    return summary


def unique_labels(paths: Sequence[Path]) -> list[str]:
    """Directory names, with ``-2``, ``-3``... appended to repeats."""
    labels: list[str] = []
    for path in paths:
        label, n = path.resolve().name, 1
        while label in labels:
            n += 1
            label = f"{path.resolve().name}-{n}"
        labels.append(label)
    return labels


def _model_dir(model: str | Path) -> Path:
    path = Path(model)
    if not path.is_dir():
        raise BoomError("model directory not found", path=path)
    if not (path / "modules.json").is_file():
        raise BoomError("not a sentence-transformers model (no modules.json)", path=path)
    return path


def _encoder(paths: list[Path], label: str, ensemble: bool) -> AbsEncoder:
    """The MTEB encoder of one row: a model, or the embedding ensemble of ``paths``."""
    from boom_merge.evaluation.ensemble import EnsembleEncoder

    logger.info("loading %s: %s", label, ", ".join(map(str, paths)))
    members = [_load_model(path, label) for path in paths]
    return EnsembleEncoder(members, label) if ensemble else members[0]


def _load_model(path: Path, label: str) -> AbsEncoder:
    """A sentence-transformers model wrapped for MTEB, named ``boom-merge/LABEL``."""
    from mteb.models.sentence_transformer_wrapper import SentenceTransformerEncoderWrapper
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(str(path), device="cpu")
    except Exception as error:  # transformers raises many types for a broken model dir
        raise BoomError(f"cannot load model: {type(error).__name__}: {error}", path=path) from None
    wrapper = SentenceTransformerEncoderWrapper(model)
    wrapper.mteb_model_meta = wrapper.mteb_model_meta.model_copy(
        update={"name": f"boom-merge/{label}", "revision": "local"}
    )
    return wrapper


def _run_model(
    encoder: AbsEncoder, label: str, tasks: list[AbsTask], out: Path, batch_size: int, progress: bool
) -> dict[str, float]:
    """Main score per task for one encoder; MTEB's ResultCache writes ``out/results/``."""
    import mteb

    logger.info("evaluating %s on %d tasks", label, len(tasks))
    result = mteb.evaluate(
        encoder,
        tasks,
        cache=mteb.ResultCache(out),
        overwrite_strategy="always",
        encode_kwargs={"batch_size": batch_size, "show_progress_bar": progress},
        co2_tracker=False,
        show_progress_bar=progress,
    )
    return {task_result.task_name: float(task_result.get_score()) for task_result in result.task_results}


def _lineage_union(paths: list[Path]) -> frozenset[str] | None:
    """The datasets any of ``paths`` was trained on; None if one model's data is unknown."""
    known = [training_datasets(path) for path in paths]
    return None if any(k is None for k in known) else frozenset().union(*known)


def _summarise(
    labels: list[str],
    paths: list[list[Path]],
    tasks: list[AbsTask],
    scores: dict[str, dict[str, float]],
    override: Sequence[str] | None,
) -> Summary:
    """Tag tasks in-domain per row (override, else the union of its models' lineage) and summarise."""
    in_domain: dict[str, frozenset[str] | None] = {}
    tagging: dict[str, str] = {}
    for label, path in zip(labels, paths):
        known = frozenset(override) if override is not None else _lineage_union(path)
        in_domain[label] = (
            None
            if known is None
            else frozenset(t.metadata.name for t in tasks if {dataset_of(t), t.metadata.name} & known)
        )
        tagging[label] = (
            "--in-domain" if override is not None else "unknown: all OOD" if known is None else ", ".join(sorted(known))
        )
    return Summary(
        models=labels,
        tasks=[task.metadata.name for task in tasks],
        main_scores={task.metadata.name: task.metadata.main_score for task in tasks},
        scores=scores,
        in_domain=in_domain,
        tagging=tagging,
    )
