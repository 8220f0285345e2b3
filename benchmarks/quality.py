"""The paper's claims at small scale: scheduling, merging, incremental updates, regimes.

Trains from one base (default: the bundled all-MiniLM-L6-v2) on four training domains
(WordNet, FOLDOC, man pages, Bible KJV->WEB) and evaluates with MTEB on their test
splits (in-domain, ID) and on held-out tasks (OOD: Devil's Dictionary, Python FAQ,
WordSim-353). Parts (``--parts``, any subset):

* ``scheduling``: BLS vs sequential vs mixed batches, same data, same seed;
* ``merging``: BOOM (Multi-SLERP / linear, equal / ratio weights, Multi-SLERP of the
  members' deltas from the base) vs the base (also at the members' max length), BLS, task
  arithmetic, TIES, the members' embedding ensemble (the upper bound a merge
  approximates at M times the inference cost) and BLS interpolated halfway back to the
  base (WiSE-FT; tells a gain from bagging from mere shrinkage towards the base);
* ``incremental``: existing = BOOM on wordnet+foldoc+manpages; new domain = Python
  code search; update models = base trained on the new data plus 10/20/40 % of the
  old, merged into the existing model (alpha 0.5, slerp); against full retraining (BLS
  on all four);
* ``regime``: BLS and BOOM with more training drift (``--epochs``, ``--lr``; members
  get the BLS member's number of steps unless ``--regime-equal-epochs``);
* ``chain``: three successive new domains, each folded into the current model by an
  update, against retraining BLS on everything seen so far (``benchmarks/quality_chain.py``);
* ``tuned`` (study v2): BOOM tuned on dev splits by ``boom-merge tune`` (each objective)
  against the free baselines tuned alike (WiSE-FT of BLS on the same dev scores),
  checkpoint and seed soups and the ensemble, in the default and the drift regime
  (``benchmarks/quality_tuned.py``);
* ``plain`` (study v3): the paper's regime, training from a plain language model made an
  embedding base by ``boom-merge base`` (``--base``): BLS, BOOM, tuned BOOM, the free
  baselines that remain when the base does not embed, the ensemble
  (``benchmarks/quality_plain.py``).

Every claim rests on training-seed replicates (``--seeds``): tables give the mean and
standard deviation over seeds, and each model's difference from BLS paired by seed.
Settings are fixed up front; nothing is tuned on the OOD tasks.

Resumable: finished trainings (``boom_member.json``), merges (``modules.json``) and
evaluations (``summary.json``) are reused when the script is run again with the same
``--out``. Writes ``OUT/timings.json``, ``OUT/results.json``, ``OUT/results.md``
(ready for ``docs/results.md``) and ``OUT/results.png``. Run by hand, in the
background, e.g.::

    nohup python benchmarks/quality.py --out runs/quality > runs/quality.log 2>&1 &
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from statistics import fmean, stdev
from typing import Any

import quality_chain  # benchmarks/quality_chain.py, beside this script
import quality_plain  # benchmarks/quality_plain.py, beside this script
import quality_tuned  # benchmarks/quality_tuned.py, beside this script
from boom_merge.embedded_default import OOD_SOURCES as OOD
from boom_merge.errors import BoomError
from boom_merge.embedded_default import TRAIN_DOMAINS, installed_corpus, resave_model
from study import BLS_MEMBER, ENSEMBLE, OLD_DOMAINS, Study, averages, bag_cost, data_dir, evaluate, logger, merge
from study import seed_table, slug, timed, train_bag, training_record

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


NEW_DOMAIN = "python_code"
HISTORY_RATIOS = (0.1, 0.2, 0.4)
PARTS = ("scheduling", "merging", "incremental", "regime", "chain", "tuned", "plain")
# merging part: label -> (write_recipe method, weights, merge against the base model)
MERGES: dict[str, tuple[str, str, bool]] = {
    "BOOM slerp equal": ("boom", "equal", False),
    "BOOM slerp ratio": ("boom", "ratio", False),
    "BOOM linear equal": ("boom_linear", "equal", False),
    "BOOM linear ratio": ("boom_linear", "ratio", False),
    # Multi-SLERP of the members' deltas from the base: without a base, full weight vectors
    # are nearly parallel (fine-tuning moves them little), so slerp ~ linear
    "BOOM slerp equal, task vectors": ("boom", "equal", True),
    "task arithmetic": ("task_arithmetic", "equal", True),
    "TIES": ("ties", "equal", True),
}
# control: BLS pulled halfway back to the base (WiSE-FT's default alpha 0.5, fixed up front);
# tells a merge's gain from mere shrinkage towards the base
WISE_FT = "BLS + base, linear 0.5 (WiSE-FT)"


# --- shared steps: data, training, merging, evaluation (benchmarks/study.py) ---------


def train_bag_equal_steps(study: Study, key: str, data: Path, config: Any, seed: int) -> list[Path]:
    """Members that all take as many steps as the 100 % (BLS) member: equal steps, not epochs."""
    bls = train_bag(study, key, data, config, seed, member=BLS_MEMBER)[0]
    steps = training_record(bls)["steps"]
    others = [train_bag(study, key, data, replace(config, max_steps=steps), seed, member=i)[0] for i in range(BLS_MEMBER)]
    return [*others, bls]


# --- parts ---------------------------------------------------------------------------


def run_scheduling(study: Study, data: Path) -> None:
    """The BLS model against sequential and mixed batches (same data and seed)."""
    tasks = (*TRAIN_DOMAINS, *OOD)
    for seed in study.args.seeds:
        for schedule in ("bls", "mixed", "sequential"):
            # the BLS model is the 100 % member of the merging part's bag (same seed, same folder)
            key = f"default/{schedule}/seed-{seed}"
            model = train_bag(study, key, data, study.config(schedule=schedule), seed, member=BLS_MEMBER)[0]
            evaluate(study, "scheduling", schedule.upper() if schedule == "bls" else schedule, seed, [model], tasks)


def evaluate_bag(
    study: Study, part: str, key: str, members: list[Path], seed: int, merges: dict[str, tuple[str, str, bool]]
) -> None:
    """BLS (the 100 % member), the merges of ``merges``, the WiSE-FT control and the ensemble of ``members``."""
    tasks = (*TRAIN_DOMAINS, *OOD)
    bls = members[BLS_MEMBER]
    evaluate(study, part, "BLS", seed, [bls], tasks)
    for label, (method, weights, with_base) in merges.items():
        model = merge(study, f"{key}/{slug(label)}", members, method, weights, with_base)
        evaluate(study, part, label, seed, [model], tasks)
    wise_ft = merge(study, f"{key}/{slug(WISE_FT)}", [bls, study.base], "boom_linear", "equal", False)
    evaluate(study, part, WISE_FT, seed, [wise_ft], tasks)
    evaluate(study, part, ENSEMBLE, seed, members, tasks)


def run_merging(study: Study, data: Path) -> None:
    """Merges of the BOOM members (and baselines) at the default regime, per seed.

    The base is evaluated twice: as shipped (max length 256) and truncating like the
    fine-tuned models (``--max-seq-length``), so "fine-tuning vs base" compares like with like.
    """
    tasks = (*TRAIN_DOMAINS, *OOD)
    evaluate(study, "merging", "base", None, [study.base], tasks)
    length = study.args.max_seq_length
    evaluate(study, "merging", f"base (max length {length})", None, [_base_truncated(study, length)], tasks)
    for seed in study.args.seeds:
        key = f"default/bls/seed-{seed}"
        evaluate_bag(study, "merging", key, train_bag(study, key, data, study.config(), seed), seed, MERGES)


def run_regime(study: Study, data: Path) -> None:
    """BLS, BOOM and the ensemble with more drift: more epochs, higher learning rate, equal steps."""
    args = study.args
    config = study.config(epochs=args.epochs, learning_rate=args.lr)
    steps = "epochs" if args.regime_equal_epochs else "steps"
    part = f"regime: {args.epochs:g} epochs, lr {args.lr:g}, members given equal {steps}"
    train = train_bag if args.regime_equal_epochs else train_bag_equal_steps
    chosen = ("BOOM slerp equal", "BOOM linear equal", "BOOM slerp equal, task vectors")
    merges = {label: MERGES[label] for label in chosen}
    for seed in args.seeds:
        key = f"{slug(part)}/bls/seed-{seed}"
        evaluate_bag(study, part, key, train(study, key, data, config, seed), seed, merges)


def run_incremental(study: Study) -> None:
    """Existing BOOM on three domains + Python code: update-and-merge vs full retraining."""
    from boom_merge.incremental.update import incremental_merge
    from boom_merge.training import train_update

    tasks = (*OLD_DOMAINS, NEW_DOMAIN, *OOD)
    old, new = data_dir(study, "old3", OLD_DOMAINS), data_dir(study, "new", (NEW_DOMAIN,))
    everything = data_dir(study, "all", (*OLD_DOMAINS, NEW_DOMAIN))
    config = study.config()
    for seed in study.args.incremental_seeds:
        key = f"incremental/seed-{seed}"
        members = train_bag(study, f"{key}/existing", old, config, seed)
        existing = merge(study, f"{key}/existing-boom", members, "boom", "equal", False)
        cost = bag_cost(study, f"{key}/existing")
        evaluate(study, "incremental", "existing BOOM (3 domains)", seed, [existing], tasks, **cost)
        for ratio in HISTORY_RATIOS:
            update_dir = study.out / "models" / key / f"update-h{ratio:g}"
            if not (update_dir / "boom_member.json").is_file():
                timed(study, "training calls", f"{key}/update-h{ratio:g}",
                       partial(train_update, str(study.base), new, old, ratio, update_dir, config, seed=seed))
            record = training_record(update_dir)
            study.timings.setdefault("trainings", {})[f"{key}/update-h{ratio:g}"] = record
            merged = study.out / "merges" / key / f"incremental-h{ratio:g}"
            if not (merged / "modules.json").is_file():
                timed(study, "merges", f"{key}/incremental-h{ratio:g}",
                       partial(incremental_merge, existing, update_dir, merged, update_weight=0.5,
                               interpolation="slerp", force=True))
            evaluate(study, "incremental", f"update only (history {ratio:.0%})", seed, [update_dir], tasks, **record)
            evaluate(study, "incremental", f"existing + update (history {ratio:.0%})", seed, [merged], tasks, **record)
        full = train_bag(study, f"{key}/full", everything, config, seed, member=BLS_MEMBER)[0]
        evaluate(study, "incremental", "full retraining (BLS, 4 domains)", seed, [full], tasks, **training_record(full))


# --- report --------------------------------------------------------------------------


def part_table(rows: list[dict[str, Any]], part: str) -> str:
    """Markdown: one line per model, mean ± std over seeds, and the difference from BLS paired by seed."""
    mine = [{"model": r["model"], "seed": r["seed"], "values": averages(r)} for r in rows if r["part"] == part]
    if not mine:
        return ""
    paired = part not in ("incremental", "chain")
    return seed_table(mine, list(mine[0]["values"]), reference="BLS" if paired else None,
                      delta_columns=("ID avg", "OOD avg"),
                      names={NEW_DOMAIN: f"{NEW_DOMAIN} (new)"} if part == "incremental" else {})


def cost_table(rows: list[dict[str, Any]]) -> str:
    """Incremental part: training steps and trainer runtime of each model (mean over seeds)."""
    costed = [r for r in rows if r["part"] == "incremental" and "steps" in r]
    if not costed:
        return ""
    lines = ["| model | training steps | trainer runtime (s) |", "|---|---|---|"]
    for model in dict.fromkeys(r["model"] for r in costed):
        chosen = [r for r in costed if r["model"] == model]
        lines.append(f"| {model} | {fmean(r['steps'] for r in chosen):.0f} | "
                     f"{fmean(r['train_runtime_s'] for r in chosen):.0f} |")
    return "\n".join(lines) + "\n"


def wall_table(timings: dict[str, Any]) -> str:
    """Wall time per part and per kind of step."""
    lines = ["| what | wall time (min) |", "|---|---|"]
    parts = timings.get("parts", {})
    for part, values in parts.items():
        lines.append(f"| part {part} | {values['wall_s'] / 60:.1f} |")
    lines.append(f"| all finished parts | {sum(v['wall_s'] for v in parts.values()) / 60:.1f} |")
    for kind in ("training calls", "merges", "evaluations"):
        walls = [v["wall_s"] for v in timings.get(kind, {}).values() if v.get("wall_s") is not None]
        lines.append(f"| all {kind} ({len(walls)}) | {sum(walls) / 60:.1f} |")
    return "\n".join(lines) + "\n"


_SECTIONS = {
    "scheduling": "Scheduling: BLS vs sequential vs mixed (same data, same seed per replicate)",
    "merging": "Merging: BOOM vs BLS, task arithmetic, TIES and the members' ensemble",
    "regime": "Regime with more training drift",  # followed by the regime's settings
    "incremental": "Incremental update: existing BOOM (3 domains) + Python code vs full retraining",
    "chain": "Continual chain: three new domains folded in one after another vs retraining BLS at each step",
    "tuned": "Study v2: tuned BOOM against the free baselines, tuned alike",
    "plain": "Study v3: BOOM from a plain language model",
}


def report_parts(rows: list[dict[str, Any]]) -> list[str]:
    """The parts present in ``rows`` (a regime part per setting), in the order of PARTS."""
    present = dict.fromkeys(r["part"] for r in rows)
    return sorted(present, key=lambda part: PARTS.index(part.partition(": ")[0]))


def write_report(study: Study) -> None:
    """``OUT/results.md`` (Markdown ready for docs/results.md) and ``OUT/results.png``."""
    args = study.args
    sizes = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    parts = [
        "# Results: the paper's claims at small scale\n",
        "Commands (every run that wrote into this folder; finished steps are reused):\n\n```\n"
        + "\n".join(study.timings["commands"]) + "\n```\n",
        "Sizes and settings (of the last command):\n\n```\n" + json.dumps(sizes) + "\n```\n",
        ("Scores are MTEB main scores x100 (nDCG@10 for retrieval, Spearman for WordSim-353), "
        f"mean ± standard deviation over training seeds. ID = {', '.join(TRAIN_DOMAINS)} "
        f"(incremental: {', '.join(OLD_DOMAINS)}; new = {NEW_DOMAIN}); OOD = {', '.join(OOD)}. "
        "Δ vs BLS is each model minus the BLS model of the same seed, then mean ± std over seeds: "
         "a difference smaller than its std is noise.\n"),
        "![ID and OOD averages](results.png)\n",
    ]
    for part in report_parts(study.rows):
        kind, _, settings = part.partition(": ")
        parts.append(f"## {_SECTIONS[kind]}{': ' + settings if settings else ''}\n\n{part_table(study.rows, part)}")
        if part == "incremental" and (costs := cost_table(study.rows)):
            parts.append("Training cost (the existing BOOM model: its four members together):\n\n" + costs)
        if part == "chain":
            parts.append(quality_chain.chain_section(study))
        if kind == "tuned":
            parts.append(quality_tuned.tuned_section(study, part))
        if kind == "plain":
            parts.append(quality_plain.plain_section(study, part))
    parts.append("## Wall times\n\n" + wall_table(study.timings))
    (study.out / "results.md").write_text("\n".join(parts), encoding="utf-8")
    plot(study.rows, study.out / "results.png")


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """ID (left axis) and OOD (right axis) averages per model, one panel per part, error bars = std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    present = report_parts(rows)
    if not present:
        return
    fig, axes = plt.subplots(len(present), 1, figsize=(10, 3.6 * len(present)), squeeze=False)
    for ax, part in zip(axes[:, 0], present):
        models = list(dict.fromkeys(r["model"] for r in rows if r["part"] == part))
        for column, twin in (("ID avg", ax), ("OOD avg", ax.twinx())):
            values = [[100 * averages(r)[column] for r in rows if r["part"] == part and r["model"] == m] for m in models]
            colour = "tab:blue" if twin is ax else "tab:orange"
            twin.errorbar([i + (0.1 if twin is ax else -0.1) for i in range(len(models))], [fmean(v) for v in values],
                          yerr=[stdev(v) if len(v) > 1 else 0.0 for v in values], fmt="o", capsize=3, color=colour)
            twin.set_ylabel(f"{column} x100", color=colour)
        ax.set_xlim(-0.5, max(len(models), 3) - 0.5)
        ax.set_xticks(range(len(models)))
        ax.set_xticklabels(models, rotation=20, ha="right", fontsize=7)
        ax.set_title(f"{part} (mean ± std over seeds)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- entry point ---------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--base", type=Path, default=None, help="base model (default: bundled all-MiniLM-L6-v2)")
    parser.add_argument("--pairs-per-domain", type=int, default=250, help="training pairs per domain")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--incremental-seeds", type=int, nargs="+", default=None, help="default: the first seed")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=5e-5, help="default regime (1 epoch)")
    parser.add_argument("--eval-queries", type=int, default=60, help="test queries per task")
    parser.add_argument("--eval-corpus", type=int, default=180, help="documents per retrieval task")
    parser.add_argument("--epochs", type=float, default=2.0, help="regime part: epochs of the BLS member")
    parser.add_argument("--lr", type=float, default=1e-4, help="regime part: learning rate")
    parser.add_argument("--regime-equal-epochs", action="store_true",
                        help="regime part: members train equal epochs (default: equal steps)")
    quality_chain.add_arguments(parser)
    quality_tuned.add_arguments(parser)
    quality_plain.add_arguments(parser)
    args = parser.parse_args(argv)
    quality_chain.check_arguments(parser, args)
    quality_tuned.check_arguments(parser, args)
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if unknown := set(args.parts) - set(PARTS):
        parser.error(f"unknown parts {sorted(unknown)}; choose from {','.join(PARTS)}")
    if min(args.pairs_per_domain, args.eval_queries, args.eval_corpus, args.batch_size) < 1:
        parser.error("sizes must be positive")
    args.incremental_seeds = args.incremental_seeds or args.seeds[:1]
    return args


def _saved_base(source: Path, out: Path) -> Path:
    """``OUT/base``: the base as sentence-transformers saves it.

    The bundled MiniLM lacks its (weightless) ``2_Normalize`` folder, which the merge
    path requires of a ``base_model`` (task arithmetic, TIES); a re-save writes it.
    """
    return resave_model(source, out / "base")


def _base_truncated(study: Study, max_seq_length: int) -> Path:
    """``OUT/base-maxlenN``: the base with the fine-tuned models' max length (weights unchanged)."""
    return resave_model(study.base, study.out / f"base-maxlen{max_seq_length}", max_seq_length=max_seq_length)


def prepare(args: argparse.Namespace) -> Study:
    """Corpora (cached by the builder), the output folder and what an earlier run measured."""
    from boom_merge.quickstart import bundled_base_model

    sources = [*TRAIN_DOMAINS, NEW_DOMAIN, *OOD]
    if "chain" in args.parts:
        sources += [name for name in quality_chain.chain_sources(args) if name not in sources]
    sources += [name for name in quality_tuned.sources(args) if name not in sources]
    try:
        corpus = installed_corpus(sources, max_train=args.pairs_per_domain, max_test_queries=args.eval_queries)
    except BoomError as error:
        sys.exit(str(error))
    args.out.mkdir(parents=True, exist_ok=True)
    base = _saved_base(args.base or bundled_base_model(), args.out.resolve())
    study = Study(args, args.out.resolve(), corpus.path, base)
    if (args.out / "timings.json").is_file():
        study.timings = json.loads((args.out / "timings.json").read_text())
    if (args.out / "results.json").is_file():
        study.rows = json.loads((args.out / "results.json").read_text())["rows"]
    return study


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(sys.argv[1:] if argv is None else argv)
    command = "python benchmarks/quality.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    study = prepare(args)
    study.timings.setdefault("commands", [])
    if command not in study.timings["commands"]:
        study.timings["commands"].append(command)
    four = data_dir(study, "four", TRAIN_DOMAINS)
    runners: dict[str, Callable[[], None]] = {
        "scheduling": lambda: run_scheduling(study, four),
        "merging": lambda: run_merging(study, four),
        "incremental": lambda: run_incremental(study),
        "regime": lambda: run_regime(study, four),
        "chain": lambda: quality_chain.run_chain(study),
        "tuned": lambda: quality_tuned.run_tuned(study, four),
        "plain": lambda: quality_plain.run_plain(study, four),
    }
    # core claims first; scheduling reuses the merging part's BLS models when they are there
    try:
        for part in sorted(args.parts, key=["merging", "incremental", "chain", "tuned", "plain", "regime", "scheduling"].index):
            start = time.perf_counter()
            runners[part]()
            # summed over runs: a resumed run adds its own time
            earlier = study.timings.get("parts", {}).get(part, {}).get("wall_s", 0.0)
            study.record("parts", part, {"wall_s": round(earlier + time.perf_counter() - start, 1)})
            write_report(study)
    finally:  # what is finished is reported even when a step fails
        write_report(study)
        logger.info("report: %s", study.out / "results.md")


if __name__ == "__main__":
    main()
