"""``benchmarks/quality.py --parts chain``: a continual chain of incremental updates.

Start: the existing BOOM model on wordnet + foldoc + manpages (the incremental part's,
reused when it is there). Then three new domains in turn (``--chain-domains``, default
Python code search, Bible KJV->WEB, VERA acronyms; never an OOD *test* source). At each
step an update model is trained from the base (or, ``init existing``, from the current
model) on the new domain plus ``--chain-history`` of everything seen before, and folded
into the current model (``--chain-variants``: ``MODE-INIT`` with mode interpolate at
α = ``--chain-weight`` or add at λ = ``--chain-add-weight``, all fixed up front; a
``-auto`` suffix chooses the weight at every step by ``--update-weight auto``'s rule on the
dev splits of the domains learnt so far and the new one, over ``--chain-auto-grid``). The
baseline retrains a BLS model from the base on everything seen so far, at every step.

After every step each model is evaluated on the old domains (ID), every chain domain
(learnt or not yet) and the OOD tasks; rows carry the step's and the cumulative training
steps (both count the existing bag's steps; then the chain adds every update so far,
retraining every retraining so far, since each starts again from the base). Writes the chain table, the
cost table and ``OUT/chain.png`` (scores along the chain) into the report.

The shared steps (training, merging, evaluation, the Study) come from ``study.py``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from statistics import fmean, stdev
from typing import Any

from study import Study, BLS_MEMBER, OLD_DOMAINS, OOD, averages, bag_cost, data_dir, evaluate, logger, merge, names
from study import timed, train_bag, training_record

DEFAULT_DOMAINS = ("python_code", "bible_kjv_web", "vera")
DEFAULT_VARIANTS = ("interpolate-base", "add-base")
RETRAIN = "retrain BLS"
EXISTING = "existing BOOM (3 domains)"
MIN_GAIN = 0.5  # nDCG@10 points: a re-indexing gain below this is within the seed spread


def chain_sources(args: Any) -> list[str]:
    """The corpus sources the chain needs beyond quality.py's own."""
    return list(args.chain_domains)


def _variant(text: str) -> tuple[str, str, bool]:
    """``MODE-INIT[-auto]`` -> (mode, init, auto)."""
    mode, _, rest = text.partition("-")
    init, _, auto = rest.partition("-")
    if mode not in ("interpolate", "add") or init not in ("base", "existing") or auto not in ("", "auto"):
        raise ValueError(f"chain variant {text!r}: use MODE-INIT[-auto], MODE interpolate|add, INIT base|existing")
    return mode, init, auto == "auto"


def add_arguments(parser: Any) -> None:
    """The chain part's options on quality.py's parser."""
    parser.add_argument("--chain-domains", default=",".join(DEFAULT_DOMAINS), type=names,
                        help="chain part: the new domains in order (corpus sources; not OOD test sources)")
    parser.add_argument("--chain-variants", default=",".join(DEFAULT_VARIANTS), type=names,
                        help="chain part: MODE-INIT list, MODE interpolate|add, INIT base|existing")
    parser.add_argument("--chain-history", type=float, default=0.2, help="chain part: history ratio of each update")
    parser.add_argument("--chain-weight", type=float, default=0.5, help="chain part: α of interpolate")
    parser.add_argument("--chain-add-weight", type=float, default=1.0, help="chain part: λ of add")
    parser.add_argument("--chain-auto-grid", default="0.25,0.5,0.75,1",
                        type=lambda v: tuple(float(p) for p in v.split(",") if p.strip()),
                        help="chain part: the weights an -auto variant chooses from (0 = the current model)")
    parser.add_argument("--chain-adapter", action="store_true",
                        help="chain part: also fit query adapters (drift --fit-adapter) from the existing model to the "
                             "first variant at steps 1 and 3 and to the step-1 retraining, and report their serving figures")
    parser.add_argument("--chain-adapter-queries", type=int, default=100, help="chain part: drift queries per dataset")
    parser.add_argument("--chain-adapter-corpus", type=int, default=500, help="chain part: drift documents per dataset")
    parser.add_argument("--chain-auto-queries", type=int, default=60, help="chain part: dev queries per source (auto)")
    parser.add_argument("--chain-auto-corpus", type=int, default=200, help="chain part: dev documents per source (auto)")


def check_arguments(parser: Any, args: Any) -> None:
    """Refuse chain settings that would read an OOD test source or make no sense."""
    from boom_merge.embedded_default import OOD_SOURCES

    if bad := set(args.chain_domains) & set(OOD_SOURCES):
        parser.error(f"--chain-domains may not use OOD test sources: {sorted(bad)}")
    if len(set(args.chain_domains)) != len(args.chain_domains) or not args.chain_domains:
        parser.error("--chain-domains: give distinct domains")
    try:
        for variant in args.chain_variants:
            _variant(variant)
    except ValueError as error:
        parser.error(str(error))


def run_chain(study: Study) -> None:
    """Every seed of ``--seeds``: the chain of each variant and the retraining baseline."""
    from boom_merge.training import train_update

    args = study.args
    domains = tuple(args.chain_domains)
    tasks = (*OLD_DOMAINS, *domains, *OOD)
    old = data_dir(study, "old3", OLD_DOMAINS)
    config = study.config()
    for seed in args.seeds:
        start = f"incremental/seed-{seed}"  # the incremental part's existing model, shared
        members = train_bag(study, f"{start}/existing", old, config, seed)
        existing = merge(study, f"{start}/existing-boom", members, "boom", "equal", False)
        existing_steps = bag_cost(study, f"{start}/existing")["steps"]
        evaluate(study, "chain", f"0: {EXISTING}", seed, [existing], tasks, step=0, variant="start",
                   steps=existing_steps, cumulative_steps=existing_steps)
        retrain_total = existing_steps
        for variant in args.chain_variants:
            mode, init, auto = _variant(variant)
            current, total = existing, existing_steps
            for step, domain in enumerate(domains, 1):
                seen = (*OLD_DOMAINS, *domains[: step - 1])
                key = f"chain/seed-{seed}/{variant}/step-{step}"
                # an update from the base depends on the step only (data, history, seed): variants share it
                update_key = f"chain/seed-{seed}/from-base/step-{step}" if init == "base" else key
                update = study.out / "models" / f"{update_key}-update"
                if not (update / "boom_member.json").is_file():
                    new = data_dir(study, f"chain-{domain}", (domain,))
                    history = data_dir(study, f"chain-seen-{step - 1}", seen)
                    run = partial(train_update, str(study.base), new, history, args.chain_history, update, config,
                                  seed=seed, init=init, existing=str(current) if init == "existing" else None,
                                  force=True)
                    timed(study, "training calls", f"{update_key}-update", run)
                record = training_record(update)
                study.timings.setdefault("trainings", {})[f"{update_key}-update"] = record
                merged = study.out / "merges" / key
                weight = _fold(study, key, current, update, merged, mode, auto)
                total += record["steps"]
                evaluate(study, "chain", f"{step}: {variant} (+{domain})", seed, [merged], tasks, step=step,
                           variant=variant, steps=record["steps"], cumulative_steps=total, weight=weight)
                current = merged
        retrained: dict[int, Path] = {}
        for step, domain in enumerate(domains, 1):
            everything = data_dir(study, f"chain-all-{step}", (*OLD_DOMAINS, *domains[:step]))
            full = train_bag(study, f"chain/seed-{seed}/retrain-{step}", everything, config, seed,
                               member=BLS_MEMBER)[0]
            retrained[step] = full
            record = training_record(full)
            retrain_total += record["steps"]
            evaluate(study, "chain", f"{step}: {RETRAIN} (+{domain})", seed, [full], tasks, step=step,
                       variant=RETRAIN, steps=record["steps"], cumulative_steps=retrain_total)
        if args.chain_adapter:
            pairs = {f"{v} step {n}": study.out / "merges" / f"chain/seed-{seed}/{v}/step-{n}"
                     for v in args.chain_variants[:1] for n in (1, len(domains))}
            pairs[f"{RETRAIN} step 1"] = retrained[1]
            for label, new_model in pairs.items():
                _adapter_drift(study, seed, label, existing, new_model)


def _adapter_drift(study: Study, seed: int, label: str, old: Path, new: Path) -> None:
    """``boom-merge drift OLD NEW --fit-adapter``'s serving figures: the mean over the corpus' retrieval
    datasets (what the table shows) and each dataset's own (``per_dataset``, kept in the records)."""
    from boom_merge.incremental.drift import drift_report

    key = f"seed-{seed}/{label}"
    if key in study.timings.get("adapter", {}):
        return
    start = time.perf_counter()
    report = drift_report(old, new, study.corpus, max_queries=study.args.chain_adapter_queries,
                          max_corpus=study.args.chain_adapter_corpus, adapter="orthogonal")
    served = [d for d in report.datasets if d.serving]
    mean = {kind: fmean(d.serving[kind].ndcg_at_10 for d in served) for kind in served[0].serving}
    recall = {kind: fmean(d.serving[kind].recall_at_10 for d in served) for kind in served[0].serving}
    study.record("adapter", key, {
        "label": label, "seed": seed, "ndcg_at_10": mean, "recall_at_10": recall, "verdict": report.verdict,
        "agreement_recall_at_10": {"plain": fmean(d.recall_at_10 for d in served),
                                   "adapter": fmean(d.adapted_recall_at_10 for d in served)},
        "datasets": [d.dataset for d in served], "adapter_texts": report.adapter_texts,
        "per_dataset": {d.dataset: {"ndcg_at_10": {k: f.ndcg_at_10 for k, f in d.serving.items()},
                                    "recall_at_10": {k: f.recall_at_10 for k, f in d.serving.items()},
                                    "agreement_recall_at_10": {"plain": d.recall_at_10,
                                                               "adapter": d.adapted_recall_at_10}}
                        for d in served},
        "wall_s": round(time.perf_counter() - start, 1)})


def _fold(study: Study, key: str, current: Path, update: Path, merged: Path, mode: str,
          auto: bool) -> float:
    """Merge ``update`` into ``current`` as ``merged`` (reused when there); the weight used."""
    from boom_merge.incremental.update import incremental_merge
    from boom_merge.incremental.update_weight import auto_update_weight

    args = study.args
    if (merged / "modules.json").is_file():
        return study.timings.get("fold weights", {}).get(key, {}).get("weight", args.chain_weight)
    if not auto:
        weight = args.chain_weight if mode == "interpolate" else args.chain_add_weight
        timed(study, "merges", key, partial(incremental_merge, current, update, merged, update_weight=weight,
                                               mode=mode, force=True))
    else:
        result = timed(study, "merges", key, partial(
            auto_update_weight, current, update, merged, corpus=study.corpus, mode=mode, grid=args.chain_auto_grid,
            max_queries=args.chain_auto_queries, max_corpus=args.chain_auto_corpus, force=True,
            echo=logger.info))
        weight = result.chosen.weight
    study.record("fold weights", key, {"weight": weight, "auto": auto})
    return weight


def _chain_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r["part"] == "chain"]


def chain_section(study: Study) -> str:
    """The chain's cost table and chart (the score table is quality.py's part table)."""
    rows = _chain_rows(study.rows)
    if not rows:
        return ""
    domains = list(study.args.chain_domains)
    lines = [f"New domains in order: {', '.join(domains)}; ID avg = the old domains "
             f"({', '.join(OLD_DOMAINS)}). Variants MODE-INIT: the update folded in by MODE, trained from INIT.\n",
             "Training steps along the chain (mean over seeds; cumulative: the existing bag plus every update, "
             "or every retraining so far) and the mean nDCG@10 x100 over the new domains learnt so far:\n",
             "| model | step | steps | cumulative steps | weight (α or λ; per seed) | new domains so far |",
             "|---|---|---|---|---|---|"]
    for model in dict.fromkeys(r["model"] for r in rows):
        chosen = [r for r in rows if r["model"] == model]
        step = chosen[0]["step"]
        learnt = [fmean(r["scores"][d] for d in domains[:step]) for r in chosen] if step else []
        new_score = f"{100 * fmean(learnt):.2f}" if learnt else ""
        weights = ", ".join(f"{r['weight']:g}" for r in chosen if r.get("weight") is not None)
        lines.append(f"| {model} | {step} | {fmean(r['steps'] for r in chosen):.0f} | "
                     f"{fmean(r['cumulative_steps'] for r in chosen):.0f} | {weights} | {new_score} |")
    plot_chain(rows, domains, study.out / "chain.png")
    return ("\n".join(lines) + "\n\n![scores along the chain](chain.png)\n\n" + delta_table(rows, domains)
            + adapter_table(study.timings.get("adapter", {})))


def delta_table(rows: Sequence[dict[str, Any]], domains: Sequence[str]) -> str:
    """Each variant minus the same seed's retraining at the same step (mean ± std over seeds)."""
    retrain = {(r["seed"], r["step"]): r for r in rows if r["variant"] == RETRAIN}
    lines = ["Each variant minus the BLS model retrained on everything seen so far, same seed and step "
             "(nDCG@10 x100, mean ± std over seeds; ID = the old domains; steps = the update's training steps "
             "over the retraining's):\n",
             "| variant | step | seeds | Δ ID | Δ new domains so far | Δ this step's new domain | Δ OOD | "
             "steps / retraining's |", "|---|---|---|---|---|---|---|---|"]

    def mean(row: dict[str, Any], tasks: Sequence[str]) -> float:
        return 100 * fmean(row["scores"][t] for t in tasks)

    for variant in dict.fromkeys(r["variant"] for r in rows if r["variant"] not in ("start", RETRAIN)):
        for step in range(1, len(domains) + 1):
            pairs = [(r, retrain[r["seed"], step]) for r in rows
                     if r["variant"] == variant and r["step"] == step and (r["seed"], step) in retrain]
            if not pairs:
                continue

            def delta(tasks: Sequence[str]) -> str:
                values = [mean(r, tasks) - mean(base, tasks) for r, base in pairs]
                return f"{fmean(values):+.2f}" + (f" ± {stdev(values):.2f}" if len(values) > 1 else "")

            cost = fmean(r["steps"] / base["steps"] for r, base in pairs)
            lines.append(f"| {variant} | {step} | {len(pairs)} | {delta(OLD_DOMAINS)} | {delta(domains[:step])} | "
                         f"{delta(domains[step - 1:step])} | {delta(OOD)} | {100 * cost:.0f} % |")
    return "\n".join(lines) + "\n"


def adapter_table(records: dict[str, Any]) -> str:
    """Serving figures of the query adapters: mean over seeds of the mean over retrieval datasets."""
    if not records:
        return ""
    lines = ["\nKeeping the index (`drift EXISTING NEW --fit-adapter`, orthogonal Procrustes fitted on train-split "
             "texts; scored on the test splits of every retrieval dataset of the corpus). nDCG@10 x100, mean over "
             "datasets, then mean ± std over seeds; share = (adapter − NEW on OLD index) / (re-indexed − NEW on "
             "OLD index), the part of the re-indexing gain the adapter recovers, given where that gain is at least "
             f"{MIN_GAIN:g} points:\n",
             "| OLD = existing BOOM -> NEW | seeds | OLD today | NEW queries, OLD index | NEW+adapter, OLD index | "
             "NEW re-indexed | NEW / re-indexed | adapter / re-indexed | share recovered | "
             "recall@10 NEW / adapter, of re-indexed | verdicts |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for label in dict.fromkeys(r["label"] for r in records.values()):
        mine = [r for r in records.values() if r["label"] == label]

        def cell(kind: str) -> str:
            values = [100 * r["ndcg_at_10"][kind] for r in mine]
            return f"{fmean(values):.2f}" + (f" ± {stdev(values):.2f}" if len(values) > 1 else "")

        def ratio(metric: str, kind: str) -> str:
            return f"{100 * fmean(r[metric][kind] / r[metric]['reindexed'] for r in mine):.1f} %"

        gains = [(r["ndcg_at_10"]["adapter_on_old_index"] - r["ndcg_at_10"]["new_on_old_index"],
                  r["ndcg_at_10"]["reindexed"] - r["ndcg_at_10"]["new_on_old_index"]) for r in mine]
        # a share of a gain within noise is no figure: only where re-indexing gains >= MIN_GAIN points
        share = [a / b for a, b in gains if b >= MIN_GAIN / 100]
        shown = f"{100 * fmean(share):.0f} % ({len(share)} of {len(mine)})" if share else f"n/a (gain < {MIN_GAIN:g})"
        verdicts = ", ".join(f"{v} x{n}" for v, n in Counter(r["verdict"] for r in mine).items())
        lines.append(f"| {label} | {len(mine)} | {cell('old')} | {cell('new_on_old_index')} | "
                     f"{cell('adapter_on_old_index')} | {cell('reindexed')} | {ratio('ndcg_at_10', 'new_on_old_index')} | "
                     f"{ratio('ndcg_at_10', 'adapter_on_old_index')} | {shown} | "
                     f"{ratio('recall_at_10', 'new_on_old_index')} / {ratio('recall_at_10', 'adapter_on_old_index')} | "
                     f"{verdicts} |")
    return "\n".join(lines) + "\n"



def plot_chain(rows: Sequence[dict[str, Any]], domains: Sequence[str], path: Path) -> None:
    """Old-domain ID, each chain domain, OOD, cumulative steps: one panel each, a line per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = [v for v in dict.fromkeys(r["variant"] for r in rows) if v != "start"]
    panels = [("ID avg (old domains)", lambda r: averages(r)["ID avg"]),
              *((f"{d} (new at step {i})", partial(lambda r, d: r["scores"][d], d=d))
                for i, d in enumerate(domains, 1)),
              ("OOD avg", lambda r: averages(r)["OOD avg"]), ("cumulative training steps", None)]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4), squeeze=False)
    start = [r for r in rows if r["variant"] == "start"]
    for ax, (title, value) in zip(axes[0], panels):
        for variant in variants:
            points = sorted({r["step"] for r in rows if r["variant"] == variant})
            mine = [[r for r in rows if r["variant"] == variant and r["step"] == s] for s in points]
            if start:
                points, mine = [0, *points], [start, *mine]
            if value is None:
                ys = [[r["cumulative_steps"] for r in group] for group in mine]
            else:
                ys = [[100 * value(r) for r in group] for group in mine]
            ax.errorbar(points, [fmean(y) for y in ys], yerr=[stdev(y) if len(y) > 1 else 0.0 for y in ys],
                        marker="o", capsize=2, label=variant, linestyle="--" if variant == RETRAIN else "-")
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("step", fontsize=8)
        ax.set_xticks(range(len(domains) + 1))
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("nDCG@10 x100 (mean ± std over seeds)", fontsize=8)
    axes[0][-1].legend(fontsize=6, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
