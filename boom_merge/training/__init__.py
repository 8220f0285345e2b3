"""Train bagging members and update models with ``SentenceTransformerTrainer``.

A member is the base model fine-tuned with InfoNCE (MultipleNegativesRankingLoss with a
temperature, in-batch plus hard negatives, no duplicate texts in a batch) on a
per-dataset subsample of the training data. Three batch schedules:

* ``bls`` (default, the paper's batch-level shuffling): every batch comes from one
  dataset and the batches of all datasets are shuffled together
  (``MultiDatasetBatchSamplers.PROPORTIONAL``);
* ``mixed``: datasets concatenated, instances shuffled across datasets;
* ``sequential``: all batches of the first dataset (by name), then the next, and so
  on (a custom multi-dataset batch sampler; ROUND_ROBIN is not sequential).

Checkpoints go to a work directory beside the output (``.NAME.work/``) and training
resumes from the last one; the finished model is written atomically with its
manifest ``boom_member.json``, then the work directory is removed. Training runs
unchanged under ``torchrun`` / ``accelerate launch``: the trainer handles data
parallelism and only the main process writes the output.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tqdm.auto import tqdm

from boom_merge.data.loading import LoadedDataset, OnBadLine, scan_training_data
from boom_merge.data.sampling import MemberSpec, member_sample, plan_members, sample_ids
from boom_merge.errors import BoomError
from boom_merge.training.config import PRECISIONS, SCHEDULES, TrainConfig
from boom_merge.training.manifest import MANIFEST_NAME, common_manifest, identity, location, model_sha256
from boom_merge.training.rows import Part, build_train_dataset, sizes, training_rows
from boom_merge.training.runner import run_training

if TYPE_CHECKING:
    from transformers import TrainerCallback

logger = logging.getLogger(__name__)

__all__ = [
    "MANIFEST_NAME",
    "PRECISIONS",
    "SCHEDULES",
    "TrainConfig",
    "build_train_dataset",
    "model_sha256",
    "train_member",
    "train_members",
    "train_update",
    "training_rows",
]


def _member_manifest(
    data_path: str, datasets: dict[str, LoadedDataset], base: str, spec: MemberSpec, config: TrainConfig
) -> tuple[dict[str, Any], Part]:
    part = Part(datasets, member_sample(spec, sizes(datasets)))
    manifest = common_manifest("member", base, config, spec.seed) | {
        "member_index": spec.index,
        "sample_ratio": spec.ratio,
        "mode": spec.mode,
        "sample_seed": spec.sample_seed,
        "complement_part": spec.part if spec.mode == "complement" else None,
        "data": location(data_path),
        "datasets": part.report(),
    }
    return manifest, part


def _train_loaded_member(
    data_path: str,
    datasets: dict[str, LoadedDataset],
    base: str,
    spec: MemberSpec,
    out: Path,
    config: TrainConfig,
    *,
    force: bool,
    callbacks: Sequence[TrainerCallback] = (),
) -> Path:
    target = Path(out) / spec.name
    manifest, part = _member_manifest(data_path, datasets, base, spec, config)
    done = target / MANIFEST_NAME
    if done.is_file() and not force:
        if identity(json.loads(done.read_text())) != identity(manifest):
            raise BoomError("exists with different settings; pass --force to retrain it", path=target)
        logger.info("%s: already trained with these settings, skipped (--force retrains)", target)
        return target
    return run_training(target, base, [part], [""], manifest, config, spec.seed, force=force, callbacks=callbacks)


def train_member(
    data: str | Path,
    base: str,
    spec: MemberSpec,
    out: str | Path,
    config: TrainConfig,
    *,
    on_bad_line: OnBadLine = "fail",
    force: bool = False,
    callbacks: Sequence[TrainerCallback] = (),
) -> Path:
    """Train one member into ``out/member-I-rRR`` and return that path.

    Self-contained (loads the data itself) and with picklable arguments, so a
    scheduler can run members on different machines. A finished member with the same
    settings is kept; an interrupted one resumes from its last checkpoint.
    """
    datasets = scan_training_data(data, on_bad_line)
    return _train_loaded_member(str(data), datasets, base, spec, Path(out), config, force=force, callbacks=callbacks)


def train_members(
    data: str | Path,
    base: str,
    ratios: str,
    out: str | Path,
    config: TrainConfig,
    *,
    seed: int = 42,
    sampling: str = "without_replacement",
    member: int | None = None,
    on_bad_line: OnBadLine = "fail",
    force: bool = False,
) -> list[Path]:
    """Train every member of a ratio spec (or only member ``member``) into ``out``."""
    specs = plan_members(ratios, seed=seed, sampling=sampling)
    if member is not None:
        if not 0 <= member < len(specs):
            raise BoomError(f"--member {member} is out of range: {ratios!r} has members 0..{len(specs) - 1}")
        specs = [specs[member]]
    datasets = scan_training_data(data, on_bad_line)
    return [
        _train_loaded_member(str(data), datasets, base, spec, Path(out), config, force=force)
        for spec in tqdm(specs, desc="members", unit="member")
    ]


def train_update(
    base: str,
    new_data: str | Path,
    history_data: str | Path,
    history_ratio: float,
    out: str | Path,
    config: TrainConfig,
    *,
    seed: int = 42,
    init: Literal["base", "existing"] = "base",
    existing: str | None = None,
    on_bad_line: OnBadLine = "fail",
    force: bool = False,
    callbacks: Sequence[TrainerCallback] = (),
) -> Path:
    """Train an update model on all new data plus ``history_ratio`` of each old dataset.

    It starts from ``base`` (as the paper's update models do) or, with
    ``init="existing"``, from the ``existing`` model. Datasets are named
    ``new/NAME`` and ``history/NAME`` so each batch stays within one of them.
    """
    if not 0 < history_ratio <= 1:
        raise BoomError(f"--history-ratio must be in (0, 1], got {history_ratio}")
    if init not in ("base", "existing") or (init == "existing") != (existing is not None):
        raise BoomError("--init existing needs --existing MODEL, and --existing is only used with --init existing")
    new_sets = scan_training_data(new_data, on_bad_line)
    old_sets = scan_training_data(history_data, on_bad_line)
    new = Part(new_sets, {name: list(range(n)) for name, n in sizes(new_sets).items()})
    history = Part(old_sets, sample_ids(sizes(old_sets), history_ratio, seed))
    init_model = existing if init == "existing" else base
    new_report, history_report = new.report(), history.report()
    manifest = common_manifest("update", base, config, seed) | {
        "mode": "without_replacement",
        "init": init,
        "init_model": location(init_model),
        "init_model_sha256": model_sha256(init_model),
        "new_data": {"path": location(new_data), "datasets": new_report},
        "history": {"path": location(history_data), "history_ratio": history_ratio, "datasets": history_report},
        "datasets": {f"new/{k}": v for k, v in new_report.items()}
        | {f"history/{k}": v for k, v in history_report.items()},
    }
    return run_training(
        Path(out),
        str(init_model),
        [new, history],
        ["new/", "history/"],
        manifest,
        config,
        seed,
        force=force,
        callbacks=callbacks,
    )
