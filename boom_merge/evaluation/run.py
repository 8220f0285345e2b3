"""``boom-merge eval``: run MTEB on several models, save results, summarise, chart.

Owns: running MTEB and writing ``eval --out`` (results, ``summary.json``, ``summary.md``, the
chart).

Models are local dirs or Hub ids (:mod:`boom_merge.model_refs` resolves and checks them);
their MTEB ``model_meta.json`` (name, revision, size, licence, training datasets and base
from :mod:`boom_merge.lineage`) is built in :mod:`.meta`. In-domain tagging compares each
task's datasets with the models' training datasets. This module may not read or write
lineage files, nor build tasks (that is :mod:`.tasks`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from boom_merge.errors import BoomError
from boom_merge.evaluation.corpus import SPLITS, Split, check_limits, find_corpus_dir, read_sources
from boom_merge.evaluation.meta import Row, ensemble_meta, model_meta, tagged_datasets, trained_names
from boom_merge.evaluation.summary import SUMMARY_FILE, Summary, plot_scores, to_markdown
from boom_merge.evaluation.tasks import Caps, dataset_of, is_local, resolve_tasks, task_info
from boom_merge.outputs import atomic_output_dir, check_output

if TYPE_CHECKING:
    from mteb.abstasks import AbsTask
    from mteb.models.abs_encoder import AbsEncoder

    from boom_merge.model_refs import ResolvedModel

logger = logging.getLogger(__name__)

#: where the results of local corpus tasks go under OUT (a ResultCache root of its own:
#: mteb's validating loader looks every task up in its registry, where local tasks are not)
LOCAL_CACHE = "local"


@dataclass(frozen=True)
class _Options:
    device: str | None
    batch_size: int
    progress: bool


def evaluate_models(
    models: Sequence[str | Path],
    out: str | Path,
    *,
    corpus: str | Path | None = None,
    split: Split = "test",
    tasks: Sequence[str] | None = None,
    device: str | None = None,
    batch_size: int = 32,
    in_domain: Sequence[str] | None = None,
    max_queries: int | None = None,
    max_corpus: int | None = None,
    cap_standard: bool = False,
    model_names: Sequence[str] | None = None,
    force: bool = False,
    progress: bool = True,
    labels: Sequence[str] | None = None,
    ensembles: Mapping[str, Sequence[str | Path]] | None = None,
) -> Summary:
    """Evaluate ``models`` (dirs or Hub ids) with MTEB and write results and summary under ``out``.

    ``tasks`` mixes corpus sources, local task names, MTEB task and benchmark names
    (default: every corpus source with ``split``, ``"test"`` or ``"dev"``). ``max_queries``
    / ``max_corpus`` cap local tasks, and standard retrieval tasks too with
    ``cap_standard``. ``out`` receives ``results/`` (standard MTEB tasks, mteb's
    ResultCache layout ``results/ORG__NAME/REVISION/``), ``local/results/`` (local tasks,
    same layout), ``summary.md``, ``summary.json`` and ``scores.png``. ``in_domain``
    (dataset or task names) overrides the training datasets read from the models.
    ``labels`` name the rows (default: the models' Hub or directory names, made unique);
    ``model_names`` the models in ``model_meta.json`` (default: the Hub id, else
    ``boom-merge/LABEL``). ``ensembles`` adds rows, label -> member models, each the
    embedding ensemble of its members.
    Returns the summary.
    """
    from boom_merge.model_refs import resolve_model

    if split not in SPLITS:
        raise BoomError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    check_limits(max_queries=max_queries, max_corpus=max_corpus, batch_size=batch_size)
    resolved = [resolve_model(model) for model in models]
    groups = {label: [resolve_model(m) for m in members] for label, members in (ensembles or {}).items()}
    rows = _rows(resolved, groups, labels, model_names)
    corpus_path = find_corpus_dir(corpus, required=tasks is None)
    everything = list(dict.fromkeys(m for row in rows for m in row.models))
    inputs = [m.path for m in everything] + ([corpus_path] if corpus_path else [])
    check_output(out, inputs=inputs, force=force)  # refuse OUT before the slow checks and loads
    for model in everything:
        _checked(model)
    caps = Caps(max_queries, max_corpus)
    chosen = resolve_tasks(corpus_path, tasks, caps, split=split, cap_standard=cap_standard)
    if in_domain is not None:  # a typo would make every task out-of-domain without a word
        known = {name for task in chosen for name in _names(task)} | set(read_sources(corpus_path) if corpus_path else ())
        unknown = [name for name in dict.fromkeys(in_domain) if name not in known]
        if unknown:
            raise BoomError(f"--in-domain {', '.join(unknown)}: no evaluated task or corpus source of that name")
    options = _Options(device, batch_size, progress)
    with atomic_output_dir(out, force=force, inputs=inputs) as tmp:
        scores, metas, result_dirs = {}, {}, {}
        for row in rows:
            scores[row.label], metas[row.label], result_dirs[row.label] = _run_row(row, chosen, tmp, options)
        summary = _summarise(rows, chosen, scores, metas, in_domain, caps, cap_standard)
        (tmp / "summary.md").write_text(to_markdown(summary), encoding="utf-8")
        extra = {
            "split": split,
            "model_paths": {
                row.label: [str(m.path) for m in row.models] if row.ensemble else str(row.models[0].path)
                for row in rows
            },
            "model_meta": {
                row.label: {"name": metas[row.label].name, "revision": metas[row.label].revision,
                            "result_dirs": result_dirs[row.label]}
                for row in rows
            },
        }
        (tmp / SUMMARY_FILE).write_text(json.dumps({**summary.to_dict(), **extra}, indent=2), encoding="utf-8")
        plot_scores(summary, tmp / "scores.png")
    return summary


def _rows(
    models: list[ResolvedModel],
    groups: dict[str, list[ResolvedModel]],
    labels: Sequence[str] | None,
    names: Sequence[str] | None,
) -> list[Row]:
    """The table's rows: one per model, then one per ensemble (labels and MTEB names checked)."""
    if not models and not groups:
        raise BoomError("give at least one model")
    if not all(groups.values()):
        raise BoomError("every ensemble needs at least one member model")
    if labels is not None and (len(labels) != len(models) or len(set(labels)) != len(labels)):
        raise BoomError("give one distinct label per model")
    labels = list(labels) if labels is not None else unique_labels(models)
    if set(labels) & set(groups):
        raise BoomError("ensemble labels must differ from model labels")
    rows = [Row(label, [model], name) for label, model, name in zip(labels, models, _model_names(names, models, labels))]
    return rows + [Row(label, members, f"boom-merge/{label}", ensemble=True) for label, members in groups.items()]


def unique_labels(models: Sequence[ResolvedModel | Path]) -> list[str]:
    """Hub repo or directory names, with ``-2``, ``-3``... appended to repeats."""
    labels: list[str] = []
    for model in models:
        hub_id = getattr(model, "hub_id", None)
        base = hub_id.rsplit("/", 1)[-1] if hub_id else Path(getattr(model, "path", model)).resolve().name
        label, n = base, 1
        while label in labels:
            n += 1
            label = f"{base}-{n}"
        labels.append(label)
    return labels


def _checked(model: ResolvedModel) -> None:
    """Refuse what would give wrong scores: not a sentence-transformers dir, no tokenizer, NaN weights."""
    from boom_merge.model_refs import check_model

    if not (model.path / "modules.json").is_file():
        raise BoomError("not a sentence-transformers model (no modules.json)", path=model.spec)
    check_model(model.path)


def _model_names(given: Sequence[str] | None, models: list[ResolvedModel], labels: list[str]) -> list[str]:
    """``model_meta.json`` names: given (ORG/NAME each), else the Hub id, else ``boom-merge/LABEL``."""
    if given is None:
        return [m.hub_id or f"boom-merge/{label}" for m, label in zip(models, labels)]
    if len(given) != len(models):
        raise BoomError(f"give one --model-name per model ({len(models)}), got {len(given)}")
    bad = [name for name in given if name.count("/") != 1 or not all(name.split("/"))]
    if bad:
        raise BoomError(f"--model-name {bad[0]!r}: must be ORG/NAME (MTEB's model name format)")
    return list(given)


def _run_row(
    row: Row, tasks: list[AbsTask], out: Path, options: _Options
) -> tuple[dict[str, float], object, list[str]]:
    """Scores, ModelMeta and result folders (relative to ``out``) of one row."""
    import mteb

    encoder = _encoder(row, options.device)
    meta = encoder.mteb_model_meta
    scores: dict[str, float] = {}
    result_dirs = []
    for local, root in ((True, out / LOCAL_CACHE), (False, out)):
        chosen = [task for task in tasks if is_local(task) == local]
        if not chosen:
            continue
        logger.info("evaluating %s on %d %s tasks", row.label, len(chosen), "local" if local else "MTEB")
        result = mteb.evaluate(
            encoder,
            chosen,
            cache=mteb.ResultCache(root),
            overwrite_strategy="always",
            encode_kwargs={"batch_size": options.batch_size, "show_progress_bar": options.progress},
            co2_tracker=False,
            show_progress_bar=options.progress,
        )
        scores |= {r.task_name: float(r.get_score()) for r in result.task_results}
        folder = root / "results" / meta.model_name_as_path() / str(meta.revision)
        result_dirs.append(folder.relative_to(out).as_posix())
    return scores, meta, result_dirs


def _encoder(row: Row, device: str | None) -> AbsEncoder:
    """The MTEB encoder of one row (a model, or the ensemble of its members), with its ModelMeta."""
    from boom_merge.evaluation.ensemble import EnsembleEncoder

    logger.info("loading %s: %s", row.label, ", ".join(m.spec for m in row.models))
    members = [_load_model(model, device) for model in row.models]
    if not row.ensemble:
        members[0].mteb_model_meta = model_meta(row.models[0], members[0].model, name=row.name)
        return members[0]
    metas = [
        model_meta(model, member.model, name=model.hub_id or f"boom-merge/{model.path.name}")
        for model, member in zip(row.models, members)
    ]
    encoder = EnsembleEncoder(members, row.label)
    encoder.mteb_model_meta = ensemble_meta(encoder.mteb_model_meta, metas, name=row.name)
    return encoder


def _load_model(model: ResolvedModel, device: str | None) -> AbsEncoder:
    """A sentence-transformers model on ``device``, wrapped for MTEB."""
    from mteb.models.sentence_transformer_wrapper import SentenceTransformerEncoderWrapper

    from boom_merge.model_refs import load_sentence_transformer

    return SentenceTransformerEncoderWrapper(load_sentence_transformer(model, device=device))


def _names(task: AbsTask) -> set[str]:
    """The names ``--in-domain`` may give ``task`` by: its dataset's, its own, its dataset path."""
    return {dataset_of(task), task.metadata.name, str(task.metadata.dataset["path"])}


def _summarise(
    rows: list[Row],
    tasks: list[AbsTask],
    scores: dict[str, dict[str, float]],
    metas: dict[str, object],
    override: Sequence[str] | None,
    caps: Caps,
    cap_standard: bool,
) -> Summary:
    """Tag tasks in-domain per row (override, else its models' training datasets) and summarise."""
    in_domain: dict[str, frozenset[str] | None] = {}
    tagging: dict[str, str] = {}
    for row in rows:
        known = frozenset(override) if override is not None else tagged_datasets(metas[row.label])
        in_domain[row.label] = (
            None
            if known is None
            else frozenset(
                t.metadata.name
                for t in tasks
                if _names(t) & known
            )
        )
        trained = [trained_names(model) for model in row.models]
        tagging[row.label] = (
            "--in-domain"
            if override is not None
            else "unknown: all OOD"
            if known is None
            else ", ".join(sorted(set().union(*(t for t in trained if t is not None)))) or "none"
        )
    return Summary(
        models=[row.label for row in rows],
        tasks=[task.metadata.name for task in tasks],
        main_scores={task.metadata.name: task.metadata.main_score for task in tasks},
        scores=scores,
        in_domain=in_domain,
        tagging=tagging,
        sources={task.metadata.name: dataset_of(task) for task in tasks},
        task_info={task.metadata.name: task_info(task, caps, cap_standard) for task in tasks},
    )
