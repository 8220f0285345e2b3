"""One training run through ``SentenceTransformerTrainer``: checkpoints, resume, atomic output."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from boom_merge.errors import BoomError
from boom_merge.outputs import atomic_output_dir, refuse_existing
from boom_merge.training.config import TrainConfig
from boom_merge.training.manifest import MANIFEST_NAME, identity
from boom_merge.training.rows import Part, _sequential_sampler_class, build_train_dataset

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from transformers import TrainerCallback

logger = logging.getLogger(__name__)


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


def load_model(init_model: str, config: TrainConfig) -> SentenceTransformer:
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


def make_trainer(
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


def _last_complete_checkpoint(checkpoints: Path) -> str | None:
    """The newest ``checkpoint-N`` that was fully written (a crash mid-save leaves one
    without ``trainer_state.json``, which the trainer cannot resume from)."""
    if not checkpoints.is_dir():
        return None
    complete = [
        path for path in checkpoints.glob("checkpoint-*")
        if path.name.split("-")[-1].isdigit() and (path / "trainer_state.json").is_file()
    ]
    return str(max(complete, key=lambda p: int(p.name.split("-")[-1]))) if complete else None


def run_training(
    out: Path,
    init_model: str,
    parts: Sequence[Part],
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

    refuse_existing(out, force)
    work = out.parent / f".{out.name}.work"
    checkpoints = work / "checkpoints"
    set_seed(seed)  # LoRA initialisation draws random numbers before the trainer seeds them
    model = load_model(init_model, config)
    trainer = make_trainer(
        model, build_train_dataset(parts, names, config, seed), config, checkpoints, seed, list(callbacks)
    )
    main_process = trainer.is_world_process_zero()
    if main_process:
        _prepare_work_dir(work, identity(manifest), force)
    trainer.accelerator.wait_for_everyone()
    resume = _last_complete_checkpoint(checkpoints)
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
