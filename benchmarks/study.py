"""What the study's parts share (``quality.py``, ``quality_chain.py``, ``quality_tuned.py``).

Owns: the study's state (:class:`Study`: paths, settings, what was measured, persisted after
each step), its shared steps (data dirs, training a bag, merging, evaluating, each reused when
done and timed), its tables (mean ± std over training seeds, differences paired by seed) and
option parsing shared by the parts. Each part imports this module; none imports another part.
It trains, merges and evaluates only through boom_merge's functions.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean, stdev
from typing import Any

from boom_merge.evaluation.summary import split_averages
from boom_merge.embedded_default import OOD_SOURCES as OOD
from boom_merge.embedded_default import RATIOS, TRAIN_DOMAINS, planned_full_data_member, training_data_dir
from boom_merge.outputs import write_output_file

logger = logging.getLogger("quality")

OLD_DOMAINS = ("wordnet", "foldoc", "manpages")
BLS_MEMBER = planned_full_data_member(RATIOS)  # the 100 % member: the BLS model
ENSEMBLE = "ensemble (M=4)"


@dataclass
class Study:
    """Paths, settings and everything measured so far (persisted after each step)."""

    args: argparse.Namespace
    out: Path
    corpus: Path
    base: Path
    timings: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)

    def config(self, **changes: Any) -> Any:
        from boom_merge.training import TrainConfig

        settings = {"batch_size": self.args.batch_size, "max_seq_length": self.args.max_seq_length,
                    "learning_rate": self.args.learning_rate, "epochs": 1.0, "save_steps": 100}
        return TrainConfig(**(settings | changes))

    def record(self, kind: str, key: str, values: dict[str, Any]) -> None:
        self.timings.setdefault(kind, {})[key] = values
        write_json(self.out / "timings.json", self.timings)

    def add_row(self, part: str, model: str, seed: int | None, scores: dict[str, float], **extra: Any) -> None:
        self.rows = [r for r in self.rows if (r["part"], r["model"], r["seed"]) != (part, model, seed)]
        self.rows.append({"part": part, "model": model, "seed": seed, "scores": scores, **extra})
        write_json(self.out / "results.json", {"rows": self.rows})


def write_json(path: Path, data: Any) -> None:
    write_output_file(path, json.dumps(data, indent=2) + "\n")


def slug(text: str) -> str:
    """A file-name and MTEB-name friendly form of a model label."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def data_dir(study: Study, name: str, domains: Sequence[str]) -> Path:
    """``OUT/data/NAME``: a training data directory holding only ``domains``."""
    return training_data_dir(study.corpus, study.out / "data" / name, domains)


def training_record(model: Path) -> dict[str, Any]:
    result = json.loads((model / "boom_member.json").read_text())["training_result"]
    return {"steps": result["steps"], "train_runtime_s": result["train_runtime_s"]}


def timed(study: Study, kind: str, key: str, run: Callable[[], Any]) -> Any:
    """Run a step that was not done before and record its wall time."""
    start = time.perf_counter()
    value = run()
    study.record(kind, key, {"wall_s": round(time.perf_counter() - start, 1)})
    return value


def train_bag(study: Study, key: str, data: Path, config: Any, seed: int, member: int | None = None) -> list[Path]:
    """Members of RATIOS (or one of them) under ``OUT/models/KEY``; steps and times recorded."""
    from boom_merge.data.sampling import plan_members
    from boom_merge.training import train_members

    out = study.out / "models" / key
    specs = plan_members(RATIOS, seed=seed)
    names = [s.name for s in specs] if member is None else [specs[member].name]
    members = [out / name for name in names]
    if not all((path / "boom_member.json").is_file() for path in members):
        members = timed(study, "training calls", f"{key}/{','.join(names)}",
                         lambda: train_members(data, str(study.base), RATIOS, out, config, seed=seed, member=member))
    for path in members:
        study.timings.setdefault("trainings", {})[f"{key}/{path.name}"] = training_record(path)
    write_json(study.out / "timings.json", study.timings)
    return members


def merge(study: Study, key: str, members: Sequence[Path], method: str, weights: str, with_base: bool) -> Path:
    """A merged model at ``OUT/merges/KEY`` (reused when already there)."""
    from boom_merge.merge.pipeline import merge_recipe
    from boom_merge.merge.recipe_writing import write_recipe

    out = study.out / "merges" / key

    def run() -> Path:
        recipe = write_recipe(members, out.with_suffix(".yml"), method=method, weights=weights,
                              base=study.base if with_base else None, force=True)
        return merge_recipe(recipe, out, force=True)

    return out if (out / "modules.json").is_file() else timed(study, "merges", key, run)


def evaluate(study: Study, part: str, model: str, seed: int | None, paths: Sequence[Path], tasks: Sequence[str],
             **extra: Any) -> None:
    """MTEB scores of a model (one path) or ensemble (several) into the study's rows.

    Results live under ``OUT/eval/`` at the model's own path (plus a tag of the task
    set), so a model that two parts share (the BLS model) is evaluated once.
    """
    from boom_merge.evaluation import evaluate_models

    out = eval_dir(study, paths, tasks)
    key = str(out.relative_to(study.out / "eval"))
    label = slug(model)

    def run() -> None:
        single = len(paths) == 1
        evaluate_models(
            list(paths) if single else [], out, corpus=study.corpus, tasks=list(tasks),
            max_queries=study.args.eval_queries, max_corpus=study.args.eval_corpus, force=True, progress=False,
            labels=[label] if single else None, ensembles=None if single else {label: list(paths)},
        )

    if not (out / "summary.json").is_file():
        timed(study, "evaluations", key, run)
    saved = json.loads((out / "summary.json").read_text())
    by_source = {task["source"]: task["name"] for task in saved["tasks"]}  # summary.json names each task's source
    scores = {source: saved["scores"][saved["models"][0]][by_source[source]] for source in tasks}
    study.add_row(part, model, seed, scores, **extra)
    logger.info("%s: %s", key, {k: round(v, 4) for k, v in scores.items()})


def eval_dir(study: Study, paths: Sequence[Path], tasks: Sequence[str]) -> Path:
    """Where :func:`evaluate` keeps the scores of a model (one path) or ensemble (several) on ``tasks``."""
    where = paths[0].relative_to(study.out) if len(paths) == 1 else paths[0].parent.relative_to(study.out) / "ensemble"
    return study.out / "eval" / f"{where}/tasks-{hashlib.sha1(','.join(tasks).encode()).hexdigest()[:8]}"


def evaluated(study: Study, paths: Sequence[Path], tasks: Sequence[str]) -> bool:
    """Whether :func:`evaluate` has the scores already (then the model itself is not needed)."""
    return (eval_dir(study, paths, tasks) / "summary.json").is_file()


def bag_cost(study: Study, key: str) -> dict[str, Any]:
    """Summed steps and trainer runtime of the members trained under ``key``."""
    records = [v for k, v in study.timings["trainings"].items() if k.startswith(f"{key}/member-")]
    return {"steps": sum(r["steps"] for r in records),
            "train_runtime_s": round(sum(r["train_runtime_s"] for r in records), 1)}


def averages(row: dict[str, Any]) -> dict[str, float]:
    """Per-task scores plus ID avg and OOD avg as the part defines them (the new domain is its own column)."""
    scores = row["scores"]
    in_domain = OLD_DOMAINS if row["part"] in ("incremental", "chain") else TRAIN_DOMAINS
    return {**scores, **split_averages(scores, in_domain, OOD)}


def names(value: str) -> tuple[str, ...]:
    """An option's comma list, blanks dropped."""
    return tuple(part.strip() for part in value.split(",") if part.strip())


def spread(values: Sequence[float]) -> str:
    """``mean ± std`` x100 (the std needs two or more values)."""
    mean = 100 * fmean(values)
    return f"{mean:.2f} ± {100 * stdev(values):.2f}" if len(values) > 1 else f"{mean:.2f}"


def paired_deltas(
    values: Mapping[int | None, Mapping[str, float]],
    reference: Mapping[int | None, Mapping[str, float]],
    column: str,
) -> list[float]:
    """``values[seed][column] - reference[seed][column]`` for every seed both have."""
    return [values[s][column] - reference[s][column] for s in values if s is not None and s in reference]


def seed_table(
    rows: Sequence[Mapping[str, object]],
    columns: Sequence[str],
    *,
    reference: str | None = "BLS",
    delta_columns: Sequence[str] = (),
    names: Mapping[str, str] | None = None,
) -> str:
    """Markdown: one line per model (in order of appearance), mean ± std over seeds per column.

    Each row is ``{"model", "seed", "values": {column: score}}``. With ``reference`` and
    ``delta_columns``, each model's difference from the reference model of the same seed
    follows (mean ± std over the seeds both have). ``names`` relabels column headers.
    """
    names = names or {}
    by_model: dict[str, dict[int | None, Mapping[str, float]]] = {}
    for row in rows:
        by_model.setdefault(str(row["model"]), {})[row["seed"]] = row["values"]  # type: ignore[index]
    ref = by_model.get(reference) if reference else None
    deltas = list(delta_columns) if ref else []
    header = ["model", "seeds", *(names.get(c, c) for c in columns), *(f"Δ {names.get(c, c)} vs {reference}" for c in deltas)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model, seeds in by_model.items():
        cells = [model, str(len(seeds)), *(spread([v[c] for v in seeds.values()]) for c in columns)]
        for column in deltas:
            paired = paired_deltas(seeds, ref, column) if model != reference else []
            cells.append(spread(paired) if paired else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
