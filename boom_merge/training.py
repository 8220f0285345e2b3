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

import hashlib
import json
import logging
import platform
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from importlib import metadata
from itertools import accumulate
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tqdm.auto import tqdm

from boom_merge.data.loading import Example, LoadedDataset, OnBadLine, scan_training_data
from boom_merge.data.sampling import MemberSpec, ids_sha256, member_sample, plan_members, sample_ids
from boom_merge.errors import BoomError
from boom_merge.outputs import atomic_output_dir, refuse_existing

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from transformers import TrainerCallback

logger = logging.getLogger(__name__)

MANIFEST_NAME = "boom_member.json"
Schedule = Literal["bls", "sequential", "mixed"]
SCHEDULES: tuple[str, ...] = ("bls", "sequential", "mixed")
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16")
_VERSIONED_PACKAGES = ("boom-merge", "torch", "transformers", "sentence-transformers", "datasets", "accelerate", "peft")
# keys that say whether a finished member is the one a command asks for
_NEGATIVE_DRAWS = 50  # random draws per missing negative before giving up
_IDENTITY_KEYS = ("kind", "base_model_sha256", "datasets", "training_args", "schedule", "seed", "mode", "sample_ratio")


@dataclass(frozen=True)
class TrainConfig:
    """Training arguments shared by all members (validated on creation).

    ``group_size`` follows FlagEmbedding's ``train_group_size``: one positive plus
    ``group_size - 1`` hard negatives per query. ``query_prompt`` is prepended to
    queries whose example carries no ``prompt`` of its own.
    """

    schedule: Schedule = "bls"
    batch_size: int = 32
    group_size: int = 2
    temperature: float = 0.05
    query_prompt: str | None = None
    max_seq_length: int | None = None
    learning_rate: float = 2e-5
    warmup_ratio: float = 0.1
    epochs: float = 1.0
    max_steps: int = -1
    gradient_accumulation: int = 1
    precision: str = "fp32"
    lora: bool = False
    lora_rank: int = 16
    lora_alpha: int = 32
    save_steps: int = 500
    logging_steps: int = 10

    def __post_init__(self) -> None:
        problems = [
            f"schedule must be one of {SCHEDULES}" if self.schedule not in SCHEDULES else "",
            f"precision must be one of {PRECISIONS}" if self.precision not in PRECISIONS else "",
            "batch size must be at least 2 (in-batch negatives)" if self.batch_size < 2 else "",
            "group size must be at least 1" if self.group_size < 1 else "",
            "temperature must be positive" if self.temperature <= 0 else "",
            "learning rate must be positive" if self.learning_rate <= 0 else "",
            "warmup ratio must be in [0, 1)" if not 0 <= self.warmup_ratio < 1 else "",
            "epochs must be positive" if self.epochs <= 0 else "",
            "max steps must be positive or -1" if self.max_steps == 0 or self.max_steps < -1 else "",
            "gradient accumulation must be at least 1" if self.gradient_accumulation < 1 else "",
            "max sequence length must be positive"
            if self.max_seq_length is not None and self.max_seq_length < 1
            else "",
            "LoRA rank and alpha must be positive" if self.lora_rank < 1 or self.lora_alpha < 1 else "",
            "save and logging steps must be positive" if self.save_steps < 1 or self.logging_steps < 1 else "",
        ]
        if problem := "; ".join(p for p in problems if p):
            raise BoomError(f"invalid training configuration: {problem}")


@dataclass(frozen=True)
class _Part:
    """Examples of one data source and the positions sampled from each dataset."""

    datasets: dict[str, LoadedDataset]
    sample: dict[str, list[int]]

    def report(self) -> dict[str, dict[str, Any]]:
        """Per-dataset counts and the sha256 of the sampled example ids."""
        return {
            name: {
                "available": len(data.examples),
                "sampled": len(self.sample[name]),
                "ids_sha256": ids_sha256(data.examples[i].id for i in self.sample[name]),
                **{k: v for k, v in data.summary().items() if k != "examples"},
            }
            for name, data in self.datasets.items()
        }


def _sizes(datasets: Mapping[str, LoadedDataset]) -> dict[str, int]:
    return {name: len(data.examples) for name, data in datasets.items()}


def model_sha256(model: str | Path) -> str:
    """sha256 over the relative paths and contents of a model directory's files.

    A Hub id is resolved to its local snapshot (the Hub itself is never contacted).
    """
    path = Path(model)
    if not path.is_dir():
        from huggingface_hub import snapshot_download

        try:
            path = Path(snapshot_download(str(model), local_files_only=True))
        except Exception:  # noqa: BLE001 - any failure means "not available locally"
            raise BoomError("model not found: not a directory nor a locally cached Hub model", path=model) from None
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
        digest.update(f"{file.relative_to(path).as_posix()}\n".encode())
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def package_versions() -> dict[str, str]:
    """Versions of Python and of the packages that shape a trained model."""
    versions = {"python": platform.python_version()}
    for name in _VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


# --- training rows -------------------------------------------------------------------


def _negatives(example: Example, pool: Sequence[Example], count: int, rng: Any) -> list[str]:
    """``count`` distinct hard negatives; examples with too few get positives of other queries."""
    own = list(dict.fromkeys(example.neg))
    if count <= len(own):
        return [own[i] for i in rng.choice(len(own), count, replace=False)]
    chosen = own
    for _ in range(_NEGATIVE_DRAWS * count):
        if len(chosen) == count:
            return chosen
        other = pool[int(rng.integers(len(pool)))]
        text = other.pos[int(rng.integers(len(other.pos)))]
        if other.query != example.query and text not in chosen and text not in example.pos:
            chosen.append(text)
    if len(chosen) == count:
        return chosen
    raise BoomError(
        f"query {example.query[:40]!r} has too few hard negatives and its dataset too few other passages to fill "
        f"{count}; lower --group-size"
    )


def training_rows(
    examples: Sequence[Example], positions: Sequence[int], config: TrainConfig, seed: int
) -> dict[str, list[str]]:
    """Columns ``anchor, positive, negative_1..`` for the sampled examples (seeded choices).

    Each query gets its prompt prepended, one of its positives, and ``group_size - 1``
    negatives, as FlagEmbedding does.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    columns: dict[str, list[str]] = {"anchor": [], "positive": []}
    columns.update({f"negative_{j}": [] for j in range(1, config.group_size)})
    for position in positions:
        example = examples[position]
        columns["anchor"].append((example.prompt or config.query_prompt or "") + example.query)
        columns["positive"].append(example.pos[int(rng.integers(len(example.pos)))])
        for j, text in enumerate(_negatives(example, examples, config.group_size - 1, rng), start=1):
            columns[f"negative_{j}"].append(text)
    return columns


def build_train_dataset(
    parts: Sequence[_Part], names: Sequence[str], config: TrainConfig, seed: int
) -> Dataset | DatasetDict:
    """A DatasetDict with one dataset per source dataset, or one concatenated Dataset for ``mixed``."""
    from datasets import Dataset, DatasetDict, concatenate_datasets

    per_dataset = {
        f"{prefix}{name}": Dataset.from_dict(
            training_rows(part.datasets[name].examples, part.sample[name], config, seed)
        )
        for prefix, part in zip(names, parts, strict=True)
        for name in sorted(part.datasets)
        if part.sample[name]
    }
    if config.schedule == "mixed":
        return concatenate_datasets(list(per_dataset.values()))
    return DatasetDict(per_dataset)


def _sequential_sampler_class() -> type:
    """Multi-dataset batch sampler for the ``sequential`` schedule (built lazily: torch import)."""
    from sentence_transformers.base.sampler import MultiDatasetDefaultBatchSampler

    class SequentialDatasetBatchSampler(MultiDatasetDefaultBatchSampler):
        """All batches of the first dataset, then all of the second, ... (each shuffled inside)."""

        def __iter__(self) -> Iterator[list[int]]:
            offsets = [0, *accumulate(len(d) for d in self.dataset.datasets)]
            for offset, sampler in zip(offsets, self.batch_samplers, strict=False):
                for batch in sampler:
                    yield [index + offset for index in batch]

        def __len__(self) -> int:
            return sum(len(sampler) for sampler in self.batch_samplers)

    return SequentialDatasetBatchSampler


# --- trainer -------------------------------------------------------------------------


def _training_arguments(config: TrainConfig, output_dir: Path, seed: int) -> Any:
    import torch
    from sentence_transformers import SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers, MultiDatasetBatchSamplers

    if config.precision != "fp32" and not torch.cuda.is_available():
        raise BoomError(f"--precision {config.precision} needs a CUDA GPU; use fp32 on CPU")
    multi = _sequential_sampler_class() if config.schedule == "sequential" else MultiDatasetBatchSamplers.PROPORTIONAL
    return SentenceTransformerTrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation,
        learning_rate=config.learning_rate,
        warmup_steps=config.warmup_ratio,  # a float is a ratio in transformers 5
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        seed=seed,
        fp16=config.precision == "fp16",
        bf16=config.precision == "bf16",
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        multi_dataset_batch_sampler=multi,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=2,
        logging_steps=config.logging_steps,
        report_to="none",
    )


def _merge_lora(model: SentenceTransformer) -> None:
    """Fold the LoRA adapters into the full weights, so the member merges as a plain model."""
    model[0].model = model[0].model.merge_and_unload()


def _load_model(init_model: str, config: TrainConfig) -> SentenceTransformer:
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(init_model)
    except (OSError, ValueError) as error:
        raise BoomError(f"cannot load sentence-transformers model: {error}", path=init_model) from None
    if config.max_seq_length is not None:
        model.max_seq_length = config.max_seq_length
    if config.query_prompt:
        model.prompts = {**model.prompts, "query": config.query_prompt}
    if config.lora:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, task_type="FEATURE_EXTRACTION")
        model[0].model = get_peft_model(model[0].model, lora)
        for module in list(model)[1:]:  # only the adapters train (and are checkpointed)
            module.requires_grad_(False)
    return model


def _trainer_class(lora: bool) -> type[SentenceTransformerTrainer]:
    """The stock trainer, or for LoRA one that restores the adapter-only checkpoints it writes."""
    from sentence_transformers import SentenceTransformerTrainer

    if not lora:
        return SentenceTransformerTrainer

    class LoraTrainer(SentenceTransformerTrainer):
        def _load_from_checkpoint(self, checkpoint_path: str, model: Any = None) -> None:
            from peft import set_peft_model_state_dict
            from safetensors.torch import load_file

            adapter = load_file(str(Path(checkpoint_path) / "adapter_model.safetensors"))
            set_peft_model_state_dict(self.model[0].model, adapter)

    return LoraTrainer


def _make_trainer(
    model: SentenceTransformer,
    dataset: Any,
    config: TrainConfig,
    checkpoints: Path,
    seed: int,
    callbacks: list[TrainerCallback],
) -> SentenceTransformerTrainer:
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    return _trainer_class(config.lora)(
        model=model,
        args=_training_arguments(config, checkpoints, seed),
        train_dataset=dataset,
        loss=MultipleNegativesRankingLoss(model, scale=1 / config.temperature),
        callbacks=callbacks,
    )


def _prepare_work_dir(work: Path, identity: dict[str, Any], force: bool) -> None:
    """Keep checkpoints only if they come from the same run; refuse others without ``force``."""
    run_file = work / "run.json"
    if run_file.is_file() and json.loads(run_file.read_text()) != identity:
        if not force:
            raise BoomError("holds checkpoints of a different run; remove it or pass --force", path=work)
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    run_file.write_text(json.dumps(identity, indent=1, sort_keys=True))


def _identity(manifest: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps({k: manifest.get(k) for k in _IDENTITY_KEYS}))


def _run_training(
    out: Path,
    init_model: str,
    parts: Sequence[_Part],
    names: Sequence[str],
    manifest: dict[str, Any],
    config: TrainConfig,
    seed: int,
    *,
    force: bool,
    callbacks: Sequence[TrainerCallback] = (),
) -> Path:
    """Train from ``init_model`` on the sampled parts; write ``out`` with ``manifest``.

    Under torchrun / accelerate every process runs this; the main one keeps the work
    directory and writes the output, the others wait for it.
    """
    from transformers import set_seed
    from transformers.trainer_utils import get_last_checkpoint

    refuse_existing(out, force)
    work = out.parent / f".{out.name}.work"
    checkpoints = work / "checkpoints"
    set_seed(seed)  # LoRA initialisation draws random numbers before the trainer seeds them
    model = _load_model(init_model, config)
    trainer = _make_trainer(
        model, build_train_dataset(parts, names, config, seed), config, checkpoints, seed, list(callbacks)
    )
    main_process = trainer.is_world_process_zero()
    if main_process:
        _prepare_work_dir(work, _identity(manifest), force)
    trainer.accelerator.wait_for_everyone()
    resume = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    if resume:
        logger.info("%s: resuming from %s", out.name, resume)
    result = trainer.train(resume_from_checkpoint=resume)
    if config.lora:
        _merge_lora(model)
    manifest["training_result"] = {
        "steps": result.global_step,
        "train_loss": result.training_loss,
        "train_runtime_s": round(result.metrics["train_runtime"], 3),
        "examples_seen": result.global_step
        * config.batch_size
        * config.gradient_accumulation
        * trainer.args.world_size,
        "processes": trainer.args.world_size,
        "resumed_from": Path(resume).name if resume else None,
    }
    if main_process:
        with atomic_output_dir(out, force=force) as tmp:
            model.save(str(tmp))
            (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        shutil.rmtree(work, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    return out


def _location(path: str | Path) -> str:
    """An existing local path made absolute (manifests outlive the working directory); else as given."""
    return str(Path(path).resolve()) if Path(path).exists() else str(path)


def _common_manifest(kind: str, base: str, config: TrainConfig, seed: int) -> dict[str, Any]:
    return {
        "kind": kind,
        "format_version": 1,
        "base_model": _location(base),
        "base_model_sha256": model_sha256(base),
        "seed": seed,
        "schedule": config.schedule,
        "training_args": asdict(config),
        "package_versions": package_versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


# --- members -------------------------------------------------------------------------


def _member_manifest(
    data_path: str, datasets: dict[str, LoadedDataset], base: str, spec: MemberSpec, config: TrainConfig
) -> tuple[dict[str, Any], _Part]:
    part = _Part(datasets, member_sample(spec, _sizes(datasets)))
    manifest = _common_manifest("member", base, config, spec.seed) | {
        "member_index": spec.index,
        "sample_ratio": spec.ratio,
        "mode": spec.mode,
        "sample_seed": spec.sample_seed,
        "complement_part": spec.part if spec.mode == "complement" else None,
        "data": _location(data_path),
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
        if _identity(json.loads(done.read_text())) != _identity(manifest):
            raise BoomError("exists with different settings; pass --force to retrain it", path=target)
        logger.info("%s: already trained with these settings, skipped (--force retrains)", target)
        return target
    return _run_training(target, base, [part], [""], manifest, config, spec.seed, force=force, callbacks=callbacks)


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


# --- update models -------------------------------------------------------------------


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
    new = _Part(new_sets, {name: list(range(n)) for name, n in _sizes(new_sets).items()})
    history = _Part(old_sets, sample_ids(_sizes(old_sets), history_ratio, seed))
    init_model = existing if init == "existing" else base
    new_report, history_report = new.report(), history.report()
    manifest = _common_manifest("update", base, config, seed) | {
        "mode": "without_replacement",
        "init": init,
        "init_model": _location(init_model),
        "init_model_sha256": model_sha256(init_model),
        "new_data": {"path": _location(new_data), "datasets": new_report},
        "history": {"path": _location(history_data), "history_ratio": history_ratio, "datasets": history_report},
        "datasets": {f"new/{k}": v for k, v in new_report.items()}
        | {f"history/{k}": v for k, v in history_report.items()},
    }
    return _run_training(
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
