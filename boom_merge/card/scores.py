"""Evaluation results for a model card: read from what ``boom-merge eval`` wrote.

Owns: reading ``summary.json`` for a card, the scores shown and the ``model-index`` entries.

``summary.json`` (in ``eval --out``) records, per task, what evaluation knows: name, source,
MTEB type and Hugging Face task type, main metric name (e.g. ``ndcg_at_10`` for retrieval),
split, dataset path and revision, and the caps it ran under; and per model label the main
scores and the model's path. Nothing is guessed here: a summary without these facts (an older
boom-merge) is refused with one line. Capped scores are not the task's score: they are kept out
of ``model-index`` unless asked for, and marked as capped wherever they are shown.
This module may not run evaluations nor read lineage.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from boom_merge.errors import BoomError

#: the file :data:`boom_merge.evaluation.summary.SUMMARY_FILE` names, spelled here so that writing a
#: card does not import the evaluation stage (mteb); test_card_from_a_real_evaluation reads what eval writes
SUMMARY_FILE = "summary.json"
_REQUIRED = ("name", "main_score", "hf_task_type", "type")
_MTEB_URL = "https://github.com/embeddings-benchmark/mteb"


@dataclass(frozen=True)
class Score:
    """One task's main score for one model, with the task's facts as evaluation recorded them."""

    task: str
    source: str
    task_type: str  # MTEB's (Retrieval, STS, ...)
    hf_task_type: str  # the Hub's (text-retrieval, sentence-similarity, ...)
    metric: str  # the task's main metric, e.g. ndcg_at_10
    value: float
    split: str
    dataset: str
    dataset_revision: str | None
    caps: Mapping[str, int | None] | None

    @property
    def capped(self) -> bool:
        return bool(self.caps)

    def caps_text(self) -> str:
        """``capped: max_queries=100, max_corpus=1000`` ('' when not capped)."""
        if not self.caps:
            return ""
        return "capped: " + ", ".join(f"{key}={value}" for key, value in self.caps.items() if value is not None)


def _read_summary(results_dir: Path) -> dict[str, Any]:
    file = results_dir / SUMMARY_FILE
    if not file.is_file():
        where = "results directory not found" if not results_dir.is_dir() else f"no {SUMMARY_FILE}"
        raise BoomError(f"{where}: pass the folder `boom-merge eval --out` wrote", path=results_dir)
    try:
        summary = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BoomError(f"unreadable evaluation summary ({error})", path=file) from None
    if not isinstance(summary, dict) or not isinstance(summary.get("tasks"), list) or not isinstance(
        summary.get("scores"), dict
    ):
        raise BoomError('not an evaluation summary (no "tasks" list and "scores" object)', path=file)
    return summary


def _label(summary: dict[str, Any], model_dir: Path | None, file: Path) -> str:
    """The summary's row for ``model_dir``: the only one, else the one whose path is ``model_dir``."""
    labels = list(summary["scores"])
    if len(labels) == 1:
        return labels[0]
    paths = summary.get("model_paths") or {}
    if model_dir is not None:
        for label in labels:
            path = paths.get(label)
            if isinstance(path, str) and Path(path).resolve() == model_dir.resolve():
                return label
    raise BoomError(f"results of several models ({', '.join(labels)}) and none is this model's", path=file)


def read_scores(results_dir: str | Path, model_dir: str | Path | None = None) -> list[Score]:
    """The main scores of ``model_dir`` (or of the only model) in an ``eval --out`` folder."""
    results_dir = Path(results_dir)
    summary = _read_summary(results_dir)
    file = results_dir / SUMMARY_FILE
    label = _label(summary, Path(model_dir) if model_dir is not None else None, file)
    values = summary["scores"][label]
    scores = []
    for task in summary["tasks"]:
        missing = [key for key in _REQUIRED if not isinstance(task, dict) or not task.get(key)]
        if missing:
            name = task.get("name", "?") if isinstance(task, dict) else "?"
            raise BoomError(
                f"task {name!r} lacks {', '.join(missing)} (written by an older boom-merge eval: run it again)", path=file
            )
        value = values.get(task["name"]) if isinstance(values, dict) else None
        if not isinstance(value, (int, float)) or math.isnan(value):
            continue
        split = task.get("split") or "test"
        dataset = task.get("dataset") or {}
        scores.append(
            Score(
                task=task["name"],
                source=str(task.get("source") or task["name"]),
                task_type=task["type"],
                hf_task_type=task["hf_task_type"],
                metric=task["main_score"],
                value=float(value),
                split=split if isinstance(split, str) else ",".join(split),
                dataset=str(dataset.get("path") or task["name"]),
                dataset_revision=dataset.get("revision"),
                caps=task.get("caps") or None,
            )
        )
    return scores


def eval_results(scores: Sequence[Score], *, include_capped: bool = False) -> list[Any]:
    """``huggingface_hub.EvalResult`` s for ``model-index``: capped scores only when asked, marked."""
    from huggingface_hub import EvalResult

    return [
        EvalResult(
            task_type=score.hf_task_type,
            task_name=score.task,
            dataset_type=score.dataset,
            dataset_name=f"MTEB {score.task}" + (f" ({score.caps_text()})" if score.capped else ""),
            dataset_config="default",
            dataset_split=score.split,
            dataset_revision=score.dataset_revision,
            metric_type=score.metric,
            metric_name=score.metric,
            metric_value=score.value,
            source_name="MTEB (boom-merge eval)",
            source_url=_MTEB_URL,
        )
        for score in scores
        if include_capped or not score.capped
    ]


def scores_table(scores: Sequence[Score]) -> str:
    """The card's evaluation table (every score, capped ones marked)."""
    rows = ["| task | source | type | split | metric | value | note |", "|---|---|---|---|---|---|---|"]
    rows += [
        f"| {s.task} | {s.source} | {s.task_type} | {s.split} | {s.metric} | {s.value:.4f} | {s.caps_text()} |"
        for s in scores
    ]
    note = (
        "\n\nCapped scores ran on a subset of the task's queries/corpus: they are not the task's score "
        "and are left out of the metadata's `model-index` (unless pushed with `--include-capped`)."
        if any(s.capped for s in scores)
        else ""
    )
    return "\n".join(rows) + note + "\n"
