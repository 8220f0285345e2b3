"""``--update-weight auto``: choose α (interpolate) or λ (add) on dev splits, never on test data.

Owns: the weight grid, the rule and ``NEW/update_weight/``.

The rule is fixed and printed before anything is scored (:func:`weight_rule`): over a
grid of weights (weight 0 is OLD itself, scored as the reference), maximise the mean
of the old-domain dev average (the dev splits of OLD's training domains) and the
new-domain dev average (the dev splits of the update's new data), among the weights
whose old-domain dev average is at most ``max_old_loss`` points (x100) below OLD's;
ties go to the smaller weight (the model nearer OLD). OLD itself always qualifies.

The machinery is ``boom-merge tune``'s: its scorer (:func:`boom_merge.tune.scoring.dev_scorer`,
MTEB on dev splits, old domains as ID and the new domain in the other average), its
:class:`~boom_merge.tune.select.Scores`, its setup fingerprint and cache, its search step
(:func:`boom_merge.tune.run.cached_record`: an interrupted run resumes; ``--force`` over a finished
NEW re-selects without scoring). Every
candidate is merged into a work dir beside NEW by :func:`boom_merge.incremental.update.incremental_merge`,
scored and deleted. NEW gets ``update_weight/candidates.json`` / ``.md`` / ``.png``.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from boom_merge.errors import BoomError
from boom_merge.incremental.update import DEFAULT_WEIGHTS, IncrementalResult, InputModel, check_inputs
from boom_merge.incremental.update import incremental_merge
from boom_merge.lineage import read_member_manifest, training_datasets
from boom_merge.outputs import output_lock
from boom_merge.tune.run import cached_record, check_tuned_models, load_score_cache
from boom_merge.tune.scoring import DevTasks, Scorer, dev_scorer, dev_splits, setup_fingerprint
from boom_merge.tune.select import TIE, Scores

logger = logging.getLogger(__name__)

#: the default grids: weight 0 (OLD) is always scored as the reference
DEFAULT_GRIDS: dict[str, tuple[float, ...]] = {
    "interpolate": (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
    "add": (0.25, 0.5, 0.75, 1.0, 1.25, 1.5),
}
DEFAULT_MAX_OLD_LOSS = 0.5
REPORT_DIR = "update_weight"


@dataclass(frozen=True)
class WeightScore:
    """Dev scores of one weight: old-domain and new-domain dev averages (0-1)."""

    weight: float
    old_dev: float
    new_dev: float
    tasks: dict[str, float]

    @property
    def objective(self) -> float:
        return (self.old_dev + self.new_dev) / 2


def weight_rule(mode: str, max_old_loss: float) -> str:
    """The selection rule in words, printed before scoring."""
    name = "α" if mode == "interpolate" else "λ"
    return (f"selection rule (fixed before scoring): {name} maximising the mean of the old-domain dev average "
            f"and the new-domain dev average, among the {name} whose old-domain dev average is at most "
            f"{max_old_loss:g} points below OLD's ({name} = 0); dev splits only; ties go to the smaller {name}")


def _reference(table: Sequence[WeightScore]) -> WeightScore:
    """Weight 0: OLD itself, what the old-domain loss is measured against."""
    reference = next((row for row in table if row.weight == 0.0), None)
    if reference is None:
        raise BoomError("the score table has no weight 0 (OLD): nothing to measure the old-domain loss against")
    return reference


def _floor(table: Sequence[WeightScore], max_old_loss: float) -> float:
    """The lowest old-domain dev average the rule allows: OLD's, ``max_old_loss`` points (x100) lower."""
    return _reference(table).old_dev - max_old_loss / 100


def _allowed(row: WeightScore, floor: float) -> bool:
    """Whether the rule may choose ``row``: its old-domain dev average is not below ``floor`` (within a tie)."""
    return row.old_dev >= floor - TIE


def choose_weight(table: Sequence[WeightScore], max_old_loss: float) -> WeightScore:
    """The weight the rule picks; ``table`` must hold weight 0 (OLD, the reference)."""
    floor = _floor(table, max_old_loss)
    allowed = [row for row in table if _allowed(row, floor)]
    top = max(row.objective for row in allowed)
    return min((row for row in allowed if row.objective >= top - TIE), key=lambda row: row.weight)


def dev_sources(corpus: Path, old: Path, update: Path) -> DevTasks:
    """Old domains (OLD's training datasets) and new domains (UPDATE's new data) with a dev split."""
    with_dev = dev_splits(corpus)
    old_names = set(training_datasets(old) or ())
    manifest = read_member_manifest(update)
    new_part = (manifest.parts().get("new_data") or {}) if manifest else {}
    new_names = set(new_part.get("datasets") or ()) - old_names
    if not new_names and manifest is not None:
        new_names = set(manifest.dataset_names()) - old_names
    old_dev, new_dev = sorted(old_names & with_dev), sorted(new_names & with_dev)
    if not old_dev:
        raise BoomError(f"no dev split of OLD's training domains ({', '.join(sorted(old_names)) or 'unknown'})",
                        path=corpus)
    if not new_dev:
        raise BoomError(f"no dev split of the update's new domain ({', '.join(sorted(new_names)) or 'unknown'})",
                        path=corpus)
    return DevTasks(tuple(old_dev), tuple(new_dev))


@dataclass
class AutoResult:
    """The chosen weight, the whole table, and the written model."""

    rule: str
    chosen: WeightScore
    table: list[WeightScore]
    result: IncrementalResult
    scored_now: int


def _key(mode: str, interpolation: str, weight: float) -> str:
    return f"{mode}|{interpolation if mode == 'interpolate' else '-'}|w={weight:g}"


def auto_update_weight(
    old: str | Path,
    update: str | Path,
    out: str | Path,
    *,
    corpus: str | Path,
    mode: str = "interpolate",
    interpolation: str = "slerp",
    update_base: str | Path | None = None,
    grid: Sequence[float] | None = None,
    max_old_loss: float = DEFAULT_MAX_OLD_LOSS,
    max_queries: int | None = 100,
    max_corpus: int | None = 400,
    device: str | None = None,
    batch_size: int = 32,
    force: bool = False,
    scorer: Scorer | None = None,
    echo: Callable[[str], None] = logger.info,
    **merge_options: Any,
) -> AutoResult:
    """Score the weights of ``grid`` on the dev splits of ``corpus``, merge the chosen one into ``out``."""
    from boom_merge.incremental.update import check_weight, resolve_update_base

    out, corpus = Path(out).absolute(), Path(corpus)
    if max_old_loss < 0:
        raise BoomError(f"--max-old-loss must be >= 0 points, got {max_old_loss}")
    weights = sorted({0.0, *map(float, grid if grid is not None else DEFAULT_GRIDS.get(mode, ()))})
    for weight in weights:
        check_weight(mode, weight)
    old_in, update_in = check_inputs(old, update, out, force=force)  # dirs or Hub ids
    old, update = old_in.path, update_in.path  # the local dirs read here (a Hub model's snapshot)
    base = resolve_update_base(update, update_base) if mode == "add" else None
    tasks = dev_sources(corpus, old, update)
    rule = weight_rule(mode, max_old_loss)
    echo(rule)
    echo(f"old-domain dev: {', '.join(tasks.in_domain)}; new-domain dev: {', '.join(tasks.out_of_domain)}")
    check_tuned_models([old_in.ref, update_in.ref], out, force=force)  # a refused model: before any scoring
    with output_lock(out):  # held for the whole search: a second run into OUT fails fast, never shares the work dir
        work = out.parent / f".{out.name}.weight-work"
        work.mkdir(parents=True, exist_ok=True)
        setup = setup_fingerprint([old, update], base.path if base else old, corpus, tasks, max_queries, max_corpus)
        cache = load_score_cache(work, out / REPORT_DIR, setup)  # tune's cache: work dir, then candidates.json
        scorer = scorer or dev_scorer(corpus, tasks, max_queries=max_queries, max_corpus=max_corpus,
                                      device=device, batch_size=batch_size)
        table, scored_now = [], 0
        for weight in weights:
            record, fresh = cached_record(cache, "scores", _key(mode, interpolation, weight), work,
                                          lambda: _score(weight, old_in, update_in, work, scorer, mode=mode,  # noqa: B023
                                                         interpolation=interpolation, base=base, **merge_options))
            scored_now += fresh
            if record["id_dev"] is None or record["ood_dev"] is None:
                raise BoomError(f"weight {weight:g}: a dev average is missing (scores {record['tasks']})")
            table.append(WeightScore(weight, record["id_dev"], record["ood_dev"], record["tasks"]))
            echo(f"  weight {weight:g}: old dev {100 * table[-1].old_dev:.2f}, new dev {100 * table[-1].new_dev:.2f}")
        chosen = choose_weight(table, max_old_loss)
        files = report_files(table, chosen, rule=rule, mode=mode, setup=setup, scores=cache["scores"],
                             max_old_loss=max_old_loss)
        result = incremental_merge(old_in, update_in, out, update_weight=chosen.weight, mode=mode,  # type: ignore[arg-type]
                                   interpolation=interpolation, base=base, force=force,  # type: ignore[arg-type]
                                   report_files=files, **merge_options,
                                   lineage_extra={"update_weight_choice": {"rule": rule, "max_old_loss": max_old_loss,
                                                                           "report": f"{REPORT_DIR}/candidates.json"}})
        shutil.rmtree(work, ignore_errors=True)
        return AutoResult(rule, chosen, table, result, scored_now)


def _score(weight: float, old: InputModel, update: InputModel, work: Path, scorer: Scorer,
           **options: Any) -> dict[str, Any]:
    model = work / "model"
    shutil.rmtree(model, ignore_errors=True)
    start = time.perf_counter()
    if weight == 0.0:
        model = old.path  # the reference: OLD itself, not a merge
    else:
        incremental_merge(old, update, model, update_weight=weight, **options)
    merged = time.perf_counter()
    try:
        scores: Scores = scorer(model)
    finally:
        if model != old.path:
            shutil.rmtree(model, ignore_errors=True)
    return {"id_dev": scores.id_dev, "ood_dev": scores.ood_dev, "tasks": scores.tasks,
            "merge_s": round(merged - start, 2), "eval_s": round(time.perf_counter() - merged, 2)}


def report_files(table: Sequence[WeightScore], chosen: WeightScore, *, rule: str, mode: str,
                 setup: dict[str, Any], scores: dict[str, Any], max_old_loss: float) -> dict[str, str | bytes]:
    """``candidates.json`` / ``.md`` / ``.png`` under :data:`REPORT_DIR` (name -> content)."""
    reference, floor = _reference(table), _floor(table, max_old_loss)
    rows = [{"weight": r.weight, "old_dev": r.old_dev, "new_dev": r.new_dev, "objective": r.objective,
             "old_loss_points": round(100 * (reference.old_dev - r.old_dev), 4),
             "allowed": _allowed(r, floor), "tasks": r.tasks} for r in table]
    data = {"mode": mode, "rule": rule, "max_old_loss": max_old_loss, "chosen": chosen.weight, "setup": setup,
            "candidates": rows, "scores": scores}
    name = "α" if mode == "interpolate" else "λ"
    lines = [f"# boom-merge incremental --update-weight auto ({mode})\n\n{rule}.\n",
             f"| | {name} | old dev | new dev | mean | old loss (points) | allowed |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        mark = "**chosen**" if row["weight"] == chosen.weight else ""
        lines.append(f"| {mark} | {row['weight']:g} | {100 * row['old_dev']:.2f} | {100 * row['new_dev']:.2f} | "
                     f"{100 * row['objective']:.2f} | {row['old_loss_points']:.2f} | "
                     f"{'yes' if row['allowed'] else 'no'} |")
    lines.append(f"\n{name} = 0 is OLD itself. Scores x100 (nDCG@10) on dev splits only; no test split was read.\n")
    return {f"{REPORT_DIR}/candidates.json": json.dumps(data, indent=2) + "\n",
            f"{REPORT_DIR}/candidates.md": "\n".join(lines),
            f"{REPORT_DIR}/candidates.png": _plot(table, chosen, name, floor)}


def _plot(table: Sequence[WeightScore], chosen: WeightScore, name: str, floor: float) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [row.weight for row in table]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ax.plot(x, [100 * r.old_dev for r in table], "o-", label="old domains (dev)")
    ax.plot(x, [100 * r.new_dev for r in table], "s-", label="new domain (dev)")
    ax.plot(x, [100 * r.objective for r in table], "k:", label="mean (objective)")
    ax.axhline(100 * floor, color="grey", linestyle="--", linewidth=1, label="old-domain floor")
    ax.axvline(chosen.weight, color="red", linewidth=1, label=f"chosen {name} = {chosen.weight:g}")
    ax.set_xlabel(f"update weight {name}")
    ax.set_ylabel("dev nDCG@10 (x100)")
    ax.set_title("boom-merge incremental: old vs new dev score along the update weight")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    return buffer.getvalue()


__all__ = ["DEFAULT_GRIDS", "DEFAULT_MAX_OLD_LOSS", "DEFAULT_WEIGHTS", "AutoResult", "WeightScore",
           "auto_update_weight", "choose_weight", "dev_sources", "weight_rule"]
