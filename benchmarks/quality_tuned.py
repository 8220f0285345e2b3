"""``benchmarks/quality.py --parts tuned``: study v2, tuned BOOM against the free baselines.

Per regime (``--tuned-regimes``: ``default`` = 1 epoch at ``--learning-rate``, ``drift`` =
``--epochs`` at ``--lr``; every member gets equal epochs, i.e. one pass over its own
subsample per epoch) and training seed, from one bag of four members (RATIOS):

* ``BLS``: the bag's 100 % member, trained with ``--keep-checkpoints`` (``--tuned-keep``);
* ``BOOM``: the bag's Multi-SLERP, equal weights (the quickstart's recipe);
* ``BOOM tuned (OBJ)``: one ``boom-merge tune`` search (objective balanced) on dev splits
  only (ID dev of the training domains, the OOD dev sources); each objective (balanced,
  id, ood) then selects its best bag or greedy soup (interpolation, weights, ``scale``)
  among that search's candidates (the id and ood rows re-select; they do not re-search,
  which keeps the selection cost to one search);
* ``WiSE-FT of BLS tuned (OBJ)``: the same search's WiSE-FT line (base, BLS at each t),
  chosen by the same rule on the same dev scores, so both sides are tuned alike;
* ``checkpoint soup of BLS``: the uniform average of its kept checkpoints (no extra training);
* ``seed soup``: the BLS models of the seeds, averaged: one replicate per regime (it costs
  as many BLS trainings as there are seeds);
* ``ensemble (M=4)``: the members' embeddings averaged (M times the inference cost).

Selection reads dev splits only; every model is then scored once on the test splits (ID
and the OOD tests). Rows carry the training cost in steps relative to the same seed's BLS
and the selection cost (candidates merged and dev-scored, and their wall time). The
report adds a cost table per regime and ``OUT/tuned.png``: ID test against OOD test per
model, one panel per regime, error bars = std over seeds.

The shared steps (training, merging, evaluation, the Study) come from ``study.py``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from statistics import fmean, stdev
from typing import Any

from study import Study, BLS_MEMBER, ENSEMBLE, OOD, RATIOS, averages, bag_cost, evaluate, logger, merge, names, slug
from study import timed, train_bag, training_record

OBJECTIVES = ("balanced", "id", "ood")
REGIMES = ("default", "drift")
CKPT_SOUP = "checkpoint soup of BLS"
SEED_SOUP = "seed soup (BLS of every seed)"
_ORDER = ("BLS", "BOOM", *(f"BOOM tuned ({o})" for o in OBJECTIVES),
          *(f"WiSE-FT of BLS tuned ({o})" for o in OBJECTIVES), CKPT_SOUP, SEED_SOUP, "ensemble (M=4)")


def add_arguments(parser: Any) -> None:
    """The tuned part's options on quality.py's parser."""
    parser.add_argument("--tuned-regimes", default=",".join(REGIMES), type=names,
                        help="tuned part: default (1 epoch, --learning-rate) and/or drift (--epochs, --lr)")
    parser.add_argument("--tuned-keep", type=int, default=4, help="tuned part: checkpoints of BLS kept for its soup")
    parser.add_argument("--tune-queries", type=int, default=60, help="tuned part: dev queries per source")
    parser.add_argument("--tune-corpus", type=int, default=200, help="tuned part: dev documents per source")
    parser.add_argument("--tuned-bags-only", action="store_true",
                        help="tuned part: train the bags and stop (what benchmarks/tune_racing.py --study-v2 reads)")


def check_arguments(parser: Any, args: Any) -> None:
    if bad := set(args.tuned_regimes) - set(REGIMES):
        parser.error(f"--tuned-regimes: unknown {sorted(bad)}; choose from {','.join(REGIMES)}")
    if args.tuned_keep < 2 or min(args.tune_queries, args.tune_corpus) < 1:
        parser.error("--tuned-keep must be 2 or more and the tune caps positive")


def sources(args: Any) -> list[str]:
    """The corpus sources the part needs beyond quality.py's own: the OOD dev sources."""
    from boom_merge.embedded_default import OOD_DEV_SOURCES

    return list(OOD_DEV_SOURCES) if {"tuned", "plain"} & set(args.parts) else []


def part_name(args: Any, regime: str) -> str:
    if regime == "default":
        return f"tuned: default regime, 1 epoch, lr {args.learning_rate:g}"
    return f"tuned: drift regime, {args.epochs:g} epochs, lr {args.lr:g}"


def _config(study: Study, regime: str) -> Any:
    args = study.args
    if regime == "default":
        return study.config()
    return study.config(epochs=args.epochs, learning_rate=args.lr)


def train_bag_keeping(study: Study, key: str, data: Path, config: Any, seed: int) -> list[Path]:
    """The bag, its BLS member trained with kept checkpoints (the others without)."""
    from dataclasses import replace

    bls = train_bag(study, key, data, replace(config, keep_checkpoints=study.args.tuned_keep), seed,
                      member=BLS_MEMBER)[0]
    others = [train_bag(study, key, data, config, seed, member=i)[0] for i in range(len(RATIOS.split(",")))
              if i != BLS_MEMBER]
    members = [*others]
    members.insert(BLS_MEMBER, bls)
    return members


def tune_search(study: Study, key: str, members: Sequence[Path], base: Path | None = None) -> Any:
    """``boom-merge tune`` (balanced) on dev splits toward ``base`` (default: the study's); re-run over a
    finished dir, it re-selects from its scores."""
    from boom_merge.embedded_default import TRAIN_DOMAINS
    from boom_merge.tune import tune

    args = study.args
    out = study.out / "tune" / key
    out.parent.mkdir(parents=True, exist_ok=True)
    run = partial(tune, list(members), out, base=base or study.base, corpus=study.corpus, in_domain=list(TRAIN_DOMAINS),
                  objective="balanced", max_queries=args.tune_queries, max_corpus=args.tune_corpus, force=True,
                  racing=False,  # the id / ood rows re-select among every candidate: all need full dev scores
                  progress=False, echo=logger.info)
    if (out / "candidates.json").is_file():  # finished: nothing is scored again
        return run()
    result = timed(study, "tuning", key, run)
    study.record("tuning", key, {**study.timings["tuning"][key], "scored_now": result.scored_now})
    return result


def tune_records(study: Study, key: str) -> dict[str, Any]:
    return json.loads((study.out / "tune" / key / "candidates.json").read_text())["scores"]


def on_line(cand: Any, full: int) -> bool:
    """On the WiSE-FT line of the full-data member: the base (t = 0), BLS + base at t, BLS alone."""
    return cand.kind in ("base", "wise_ft") or (cand.kind == "member" and cand.members == (full,))


def candidate_dir(study: Study, key: str, cand: Any) -> Path:
    """Where :func:`merge_candidate` writes a candidate of the search ``key``."""
    return study.out / "merges" / key / slug(cand.key)


def merge_candidate(study: Study, key: str, cand: Any, members: Sequence[Path], base: Path | None = None) -> Path:
    """A candidate of the search ``key`` merged (reused when there), toward ``base`` (default: the study's)."""
    from boom_merge.merge.pipeline import merge_recipe
    from boom_merge.tune.candidates import recipe_text

    out = candidate_dir(study, key, cand)
    if not (out / "modules.json").is_file():
        recipe = out.with_suffix(".yml")
        recipe.parent.mkdir(parents=True, exist_ok=True)
        recipe.write_text(recipe_text(cand, list(members), base or study.base), encoding="utf-8")
        timed(study, "merges", f"{key}/{slug(cand.key)}", lambda: merge_recipe(recipe, out, force=True))
    return out


def run_tuned(study: Study, data: Path) -> None:
    """Every regime of ``--tuned-regimes`` and seed of ``--seeds``: the rows of the module docstring."""
    from boom_merge.embedded_default import TRAIN_DOMAINS
    from boom_merge.merge.recipe_writing import checkpoint_members
    from boom_merge.tune.select import choose

    args = study.args
    tasks = (*TRAIN_DOMAINS, *OOD)
    for regime in args.tuned_regimes:
        part, config, bls_models = part_name(args, regime), _config(study, regime), []
        for seed in args.seeds:
            key = f"tuned/{regime}/seed-{seed}"
            members = train_bag_keeping(study, key, data, config, seed)
            if args.tuned_bags_only:
                continue
            bls = members[BLS_MEMBER]
            bls_models.append(bls)
            bls_steps = training_record(bls)["steps"]
            bag_steps = bag_cost(study, key)["steps"]

            def row(model: str, paths: Sequence[Path], steps: float, **extra: Any) -> None:
                evaluate(study, part, model, seed, list(paths), tasks, train_cost=steps / bls_steps, **extra)

            row("BLS", [bls], bls_steps)
            row("BOOM", [merge(study, f"{key}/boom", members, "boom", "equal", False)], bag_steps)
            result, records = tune_search(study, key, members), tune_records(study, key)
            for objective in OBJECTIVES:  # one search (balanced); each objective selects among its candidates
                bags = [(c, s) for c, s in result.candidates if c.kind in ("bag", "soup")]
                line = [(c, s) for c, s in result.candidates if on_line(c, BLS_MEMBER)]
                for label, pool, steps in ((f"BOOM tuned ({objective})", bags, bag_steps),
                                           (f"WiSE-FT of BLS tuned ({objective})", line, bls_steps)):
                    chosen = choose(pool, objective)
                    model = merge_candidate(study, key, chosen, members)
                    paid = result.candidates if label.startswith("BOOM") else pool  # what its selection scored
                    row(label, [model], steps, choice=chosen.describe([m.name for m in members]),
                        selection_candidates=len(paid), selection_s=round(sum(
                            (records[c.key].get("merge_s") or 0) + (records[c.key].get("eval_s") or 0)
                            for c, _ in paid), 1))
            soup = merge(study, f"{key}/checkpoint-soup", checkpoint_members([bls]), "boom_linear", "equal", False)
            row(CKPT_SOUP, [soup], bls_steps)
            row(ENSEMBLE, members, bag_steps)
        if len(bls_models) > 1 and not args.tuned_bags_only:
            soup = merge(study, f"tuned/{regime}/seed-soup", bls_models, "boom_linear", "equal", False)
            steps = [training_record(m)["steps"] for m in bls_models]
            evaluate(study, part, SEED_SOUP, None, [soup], tasks, train_cost=sum(steps) / fmean(steps),
                       seeds_merged=list(args.seeds))


def _rows(rows: Sequence[dict[str, Any]], part: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["part"] == part]


def tuned_section(study: Study, part: str) -> str:
    """The cost table of one regime (the score table is quality.py's part table); the figure once."""
    rows = _rows(study.rows, part)
    if not rows:
        return ""
    lines = [cost_table(study.rows, part)]
    lines += ["", "Tuned alike: BOOM tuned minus WiSE-FT of BLS tuned, same seed and objective, x100 "
              "(per seed, then mean ± std):\n", "| objective | Δ ID avg | Δ OOD avg |", "|---|---|---|"]
    for objective in OBJECTIVES:
        paired = seed_deltas(rows, f"BOOM tuned ({objective})", f"WiSE-FT of BLS tuned ({objective})")
        if paired:
            lines.append(f"| {objective} | " + " | ".join(
                _spread([d[i] for d in paired.values()]) for i in (0, 1)) + " |")
    parts = [p for p in dict.fromkeys(r["part"] for r in study.rows) if p.startswith("tuned")]
    text = "\n".join(lines) + "\n"
    if part == parts[-1]:
        plot_tuned(study.rows, parts, study.out / "tuned.png")
        text += "\n![ID test vs OOD test per model and regime](tuned.png)\n"
    return text


def cost_table(all_rows: Sequence[dict[str, Any]], part: str) -> str:
    """Per model of ``part``: training cost, selection cost, per-seed Δ vs BLS and each tuned row's choice."""
    rows = _rows(all_rows, part)
    lines = ["Cost (mean over seeds): training steps relative to the same seed's BLS; selection = candidates "
             "merged and scored on dev splits and their wall time (BOOM tuned: the whole tune run, shared by its "
             "rows; WiSE-FT tuned: the line's candidates only). Per-seed Δ = ID avg / OOD avg minus the same "
             "seed's BLS, x100, in seed order. The choice of each tuned row, per seed:\n",
             "| model | training cost (x BLS) | selection: candidates | selection: dev wall (s) | "
             "per-seed Δ ID / Δ OOD vs BLS | choices |",
             "|---|---|---|---|---|---|"]
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        cands = [r["selection_candidates"] for r in mine if "selection_candidates" in r]
        walls = [r["selection_s"] for r in mine if "selection_s" in r]
        choices = "; ".join(f"{r['seed']}: {r['choice']}" for r in mine if "choice" in r)
        deltas = ", ".join(f"{d[0]:+.2f} / {d[1]:+.2f}" for d in seed_deltas(rows, model, "BLS").values())
        lines.append(f"| {model} | {fmean(r['train_cost'] for r in mine):.2f} | "
                     + (f"{fmean(cands):.0f} | {fmean(walls):.0f} |" if cands else "0 | 0 |")
                     + f" {deltas if model != 'BLS' else ''} | {choices} |")
    return "\n".join(lines) + "\n"


def seed_deltas(rows: Sequence[dict[str, Any]], model: str, against: str) -> dict[int, tuple[float, float]]:
    """Seed -> (ID avg, OOD avg) of ``model`` minus ``against`` of the same seed, x100; seeds both have."""
    def by_seed(name: str) -> dict[int, dict[str, float]]:
        return {r["seed"]: averages(r) for r in rows if r["model"] == name and r["seed"] is not None}

    mine, other = by_seed(model), by_seed(against)
    return {seed: (100 * (mine[seed]["ID avg"] - other[seed]["ID avg"]),
                   100 * (mine[seed]["OOD avg"] - other[seed]["OOD avg"]))
            for seed in sorted(mine) if seed in other}


def _spread(values: Sequence[float]) -> str:
    text = ", ".join(f"{v:+.2f}" for v in values)
    return f"{text} ({fmean(values):+.2f} ± {stdev(values):.2f})" if len(values) > 1 else text


#: a model's (colour, marker, filled) in the figure: colour = family (BOOM blue, WiSE-FT orange,
#: soups green, ensemble purple), marker = objective, so each tuned pair is one marker in two colours
_OBJECTIVE_MARKERS = {"balanced": "D", "id": "^", "ood": "v"}
STYLES = {"BLS": ("black", "o", True), "BOOM": ("tab:blue", "s", True), CKPT_SOUP: ("tab:green", "p", True),
           SEED_SOUP: ("tab:olive", "h", True), "ensemble (M=4)": ("tab:purple", "X", True),
           **{f"BOOM tuned ({o})": ("tab:blue", m, True) for o, m in _OBJECTIVE_MARKERS.items()},
           **{f"WiSE-FT of BLS tuned ({o})": ("tab:orange", m, False) for o, m in _OBJECTIVE_MARKERS.items()}}


def plot_tuned(rows: Sequence[dict[str, Any]], parts: Sequence[str], path: Path,
               styles: dict[str, tuple[str, str, bool]] | None = None) -> None:
    """ID-test avg (x) vs OOD-test avg (y) per model, one panel per part, error bars = std over seeds;
    ``styles`` adds (colour, marker, filled) for models beyond study v2's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(parts), figsize=(6.4 * len(parts), 6.0), squeeze=False)
    others = iter("*<>P")
    for ax, part in zip(axes[0], parts):
        mine = _rows(rows, part)
        models = sorted(dict.fromkeys(r["model"] for r in mine), key=lambda m: _ORDER.index(m) if m in _ORDER else 99)
        for model in models:
            colour, marker, filled = (STYLES | (styles or {})).get(model) or ("grey", next(others, "."), True)
            values = [averages(r) for r in mine if r["model"] == model]
            xs, ys = [100 * v["ID avg"] for v in values], [100 * v["OOD avg"] for v in values]
            ax.errorbar(fmean(xs), fmean(ys), xerr=stdev(xs) if len(xs) > 1 else 0, yerr=stdev(ys) if len(ys) > 1 else 0,
                        fmt=marker, capsize=3, markersize=8, label=model, color=colour, elinewidth=1.2,
                        mfc=colour if filled else "white", mew=1.6, alpha=0.9)
        ax.set_xlabel("ID test avg (nDCG@10 x100)")
        ax.set_ylabel("OOD test avg (x100)")
        ax.set_title(part.partition(": ")[2] + " (mean ± std over seeds)", fontsize=9)
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
