"""``benchmarks/quality.py --parts chain``: a continual chain of incremental updates.

Start: the existing BOOM model on wordnet + foldoc + manpages (the incremental part's,
reused when it is there). Then three new domains in turn (``--chain-domains``, default
Python code search, Bible KJV->WEB, VERA acronyms; never an OOD *test* source). At each
step an update model is trained from the base (or, ``init existing``, from the current
model) on the new domain plus ``--chain-history`` of everything seen before, and folded
into the current model (``--chain-variants``: ``MODE-INIT`` with mode interpolate at
α = ``--chain-weight`` or add at λ = ``--chain-add-weight``, all fixed up front). The
baseline retrains a BLS model from the base on everything seen so far, at every step.

After every step each model is evaluated on the old domains (ID), every chain domain
(learnt or not yet) and the OOD tasks; rows carry the step's and the cumulative training
steps (both count the existing bag's steps; then the chain adds every update so far,
retraining every retraining so far, since each starts again from the base). Writes the chain table, the
cost table and ``OUT/chain.png`` (scores along the chain) into the report.

The helpers (training, merging, evaluation, the Study) are quality.py's, passed in as
the module ``q`` (no second import of the script).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path
from statistics import fmean, stdev
from types import ModuleType
from typing import Any

DEFAULT_DOMAINS = ("python_code", "bible_kjv_web", "vera")
DEFAULT_VARIANTS = ("interpolate-base", "add-base")
RETRAIN = "retrain BLS"
EXISTING = "existing BOOM (3 domains)"


def chain_sources(args: Any) -> list[str]:
    """The corpus sources the chain needs beyond quality.py's own."""
    return list(args.chain_domains)


def _variant(text: str) -> tuple[str, str]:
    mode, _, init = text.partition("-")
    if mode not in ("interpolate", "add") or init not in ("base", "existing"):
        raise ValueError(f"chain variant {text!r}: use MODE-INIT, MODE interpolate|add, INIT base|existing")
    return mode, init


def add_arguments(parser: Any) -> None:
    """The chain part's options on quality.py's parser."""
    parser.add_argument("--chain-domains", default=",".join(DEFAULT_DOMAINS),
                        type=lambda v: tuple(p.strip() for p in v.split(",") if p.strip()),
                        help="chain part: the new domains in order (corpus sources; not OOD test sources)")
    parser.add_argument("--chain-variants", default=",".join(DEFAULT_VARIANTS),
                        type=lambda v: tuple(p.strip() for p in v.split(",") if p.strip()),
                        help="chain part: MODE-INIT list, MODE interpolate|add, INIT base|existing")
    parser.add_argument("--chain-history", type=float, default=0.2, help="chain part: history ratio of each update")
    parser.add_argument("--chain-weight", type=float, default=0.5, help="chain part: α of interpolate")
    parser.add_argument("--chain-add-weight", type=float, default=1.0, help="chain part: λ of add")


def check_arguments(parser: Any, args: Any) -> None:
    """Refuse chain settings that would read an OOD test source or make no sense."""
    from boom_merge.experiments import OOD_SOURCES

    if bad := set(args.chain_domains) & set(OOD_SOURCES):
        parser.error(f"--chain-domains may not use OOD test sources: {sorted(bad)}")
    if len(set(args.chain_domains)) != len(args.chain_domains) or not args.chain_domains:
        parser.error("--chain-domains: give distinct domains")
    try:
        for variant in args.chain_variants:
            _variant(variant)
    except ValueError as error:
        parser.error(str(error))


def run_chain(q: ModuleType, study: Any) -> None:
    """Every seed of ``--seeds``: the chain of each variant and the retraining baseline."""
    from boom_merge.incremental import incremental_merge
    from boom_merge.training import train_update

    args = study.args
    domains = tuple(args.chain_domains)
    tasks = (*q.OLD_DOMAINS, *domains, *q.OOD)
    old = q.data_dir(study, "old3", q.OLD_DOMAINS)
    config = study.config()
    for seed in args.seeds:
        start = f"incremental/seed-{seed}"  # the incremental part's existing model, shared
        members = q.train_bag(study, f"{start}/existing", old, config, seed)
        existing = q.merge(study, f"{start}/existing-boom", members, "boom", "equal", False)
        existing_steps = q._bag_cost(study, f"{start}/existing")["steps"]
        q.evaluate(study, "chain", f"0: {EXISTING}", seed, [existing], tasks, step=0, variant="start",
                   steps=existing_steps, cumulative_steps=existing_steps)
        retrain_total = existing_steps
        for variant in args.chain_variants:
            mode, init = _variant(variant)
            current, total = existing, existing_steps
            for step, domain in enumerate(domains, 1):
                seen = (*q.OLD_DOMAINS, *domains[: step - 1])
                key = f"chain/seed-{seed}/{variant}/step-{step}"
                update = study.out / "models" / f"{key}-update"
                if not (update / "boom_member.json").is_file():
                    new = q.data_dir(study, f"chain-{domain}", (domain,))
                    history = q.data_dir(study, f"chain-seen-{step - 1}", seen)
                    run = partial(train_update, str(study.base), new, history, args.chain_history, update, config,
                                  seed=seed, init=init, existing=str(current) if init == "existing" else None,
                                  force=True)
                    q._timed(study, "training calls", f"{key}-update", run)
                record = q._training_record(update)
                study.timings.setdefault("trainings", {})[f"{key}-update"] = record
                merged = study.out / "merges" / key
                weight = args.chain_weight if mode == "interpolate" else args.chain_add_weight
                if not (merged / "modules.json").is_file():
                    q._timed(study, "merges", key, partial(incremental_merge, current, update, merged,
                                                           update_weight=weight, mode=mode, force=True))
                total += record["steps"]
                q.evaluate(study, "chain", f"{step}: {variant} (+{domain})", seed, [merged], tasks, step=step,
                           variant=variant, steps=record["steps"], cumulative_steps=total)
                current = merged
        for step, domain in enumerate(domains, 1):
            everything = q.data_dir(study, f"chain-all-{step}", (*q.OLD_DOMAINS, *domains[:step]))
            full = q.train_bag(study, f"chain/seed-{seed}/retrain-{step}", everything, config, seed,
                               member=q.BLS_MEMBER)[0]
            record = q._training_record(full)
            retrain_total += record["steps"]
            q.evaluate(study, "chain", f"{step}: {RETRAIN} (+{domain})", seed, [full], tasks, step=step,
                       variant=RETRAIN, steps=record["steps"], cumulative_steps=retrain_total)


def _chain_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r["part"] == "chain"]


def chain_section(q: ModuleType, study: Any) -> str:
    """The chain's cost table and chart (the score table is quality.py's part table)."""
    rows = _chain_rows(study.rows)
    if not rows:
        return ""
    domains = list(study.args.chain_domains)
    lines = [f"New domains in order: {', '.join(domains)}; ID avg = the old domains "
             f"({', '.join(q.OLD_DOMAINS)}). Variants MODE-INIT: the update folded in by MODE, trained from INIT.\n",
             "Training steps along the chain (mean over seeds; cumulative: the existing bag plus every update, "
             "or every retraining so far) and the mean nDCG@10 x100 over the new domains learnt so far:\n",
             "| model | step | steps | cumulative steps | new domains so far |", "|---|---|---|---|---|"]
    for model in dict.fromkeys(r["model"] for r in rows):
        chosen = [r for r in rows if r["model"] == model]
        step = chosen[0]["step"]
        learnt = [fmean(r["scores"][d] for d in domains[:step]) for r in chosen] if step else []
        new_score = f"{100 * fmean(learnt):.2f}" if learnt else ""
        lines.append(f"| {model} | {step} | {fmean(r['steps'] for r in chosen):.0f} | "
                     f"{fmean(r['cumulative_steps'] for r in chosen):.0f} | {new_score} |")
    plot_chain(q, rows, domains, study.out / "chain.png")
    return "\n".join(lines) + "\n\n![scores along the chain](chain.png)\n"


def plot_chain(q: ModuleType, rows: Sequence[dict[str, Any]], domains: Sequence[str], path: Path) -> None:
    """Old-domain ID, each chain domain, OOD, cumulative steps: one panel each, a line per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = [v for v in dict.fromkeys(r["variant"] for r in rows) if v != "start"]
    panels = [("ID avg (old domains)", lambda r: q._averages(r)["ID avg"]),
              *((f"{d} (new at step {i})", partial(lambda r, d: r["scores"][d], d=d))
                for i, d in enumerate(domains, 1)),
              ("OOD avg", lambda r: q._averages(r)["OOD avg"]), ("cumulative training steps", None)]
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
