"""The trainer of one run: model loading, loss, training arguments, ``SentenceTransformerTrainer``.

Owns what is handed to sentence-transformers and transformers; never writes outputs
(``runner`` does) and never decides which examples are trained on (``rows`` does).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from boom_merge.errors import BoomError
from boom_merge.training.config import TrainConfig

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from torch import nn
    from transformers import TrainerCallback

    from boom_merge.model_refs import ResolvedModel
    from boom_merge.training.dev import DevSet


def _report_to(value: str) -> list[str]:
    """``--report-to`` as transformers takes it; an integration that is not installed is refused here."""
    from transformers.integrations import get_available_reporting_integrations

    names = [name.strip() for name in value.split(",") if name.strip()]
    if names in ([], ["none"]):
        return []
    if names == ["all"]:
        return ["all"]
    available = set(get_available_reporting_integrations())
    missing = [name for name in names if name not in available]
    if missing:
        raise BoomError(
            f"--report-to {','.join(missing)}: not installed (available here: {', '.join(sorted(available)) or 'none'})"
        )
    return names


def training_arguments(config: TrainConfig, output_dir: Path, seed: int) -> Any:
    """``SentenceTransformerTrainingArguments`` for ``config``: NO_DUPLICATES batches, the schedule's sampler."""
    import torch
    from sentence_transformers import SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers, MultiDatasetBatchSamplers

    from boom_merge.training.samplers import SequentialDatasetBatchSampler

    if config.precision != "fp32" and not torch.cuda.is_available():
        raise BoomError(f"--precision {config.precision} needs a CUDA GPU; use fp32 on CPU")
    multi = SequentialDatasetBatchSampler if config.schedule == "sequential" else MultiDatasetBatchSamplers.PROPORTIONAL
    evaluate = config.eval_steps is not None
    names = {f.name for f in dataclasses.fields(SentenceTransformerTrainingArguments)}
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    return SentenceTransformerTrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation,
        **{  # transformers 5 renamed gradient_checkpointing*
            checkpointing: config.gradient_checkpointing,
            f"{checkpointing}_kwargs": {"use_reentrant": False} if config.gradient_checkpointing else None,
        },
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
        eval_strategy="steps" if evaluate else "no",
        eval_steps=config.eval_steps,
        logging_steps=config.logging_steps,
        report_to=_report_to(config.report_to),
    )


def build_loss(model: SentenceTransformer, config: TrainConfig) -> nn.Module:
    """InfoNCE with in-batch and hard negatives: MNRL, or MNRL with GradCache (``cached-mnrl``)."""
    from sentence_transformers.sentence_transformer.losses import (
        CachedMultipleNegativesRankingLoss,
        MultipleNegativesRankingLoss,
    )

    common = {"scale": 1 / config.temperature, "gather_across_devices": config.gather_across_devices}
    if config.loss == "cached-mnrl":
        return CachedMultipleNegativesRankingLoss(model, mini_batch_size=config.mini_batch_size, **common)
    return MultipleNegativesRankingLoss(model, **common)


def load_model(init_model: str | Path | ResolvedModel, config: TrainConfig) -> SentenceTransformer:
    """The model to train: ``init_model`` loaded from its local dir, with the config's prompts, length and LoRA.

    A model resolved from the Hub keeps its id and commit as the card's base model.
    """
    from sentence_transformers import SentenceTransformer

    from boom_merge.model_refs import resolve_model

    resolved = init_model if hasattr(init_model, "path") else resolve_model(init_model)
    try:
        model = SentenceTransformer(str(resolved.path), local_files_only=True)
    except (OSError, ValueError) as error:
        raise BoomError(f"cannot load sentence-transformers model: {error}", path=resolved.spec) from None
    if resolved.hub_id:
        model.model_card_data.base_model = resolved.hub_id
        model.model_card_data.base_model_revision = resolved.revision
    if config.max_seq_length is not None:
        model.max_seq_length = config.max_seq_length
    prompts = {name: config.prompt_for(name) for name in config.instructions or {}}
    if config.query_prompt is not None:  # also an explicit "": the saved model prompts queries as trained
        prompts["query"] = config.query_prompt
    if prompts:
        model.prompts = {**model.prompts, **prompts}
    if config.freeze_embeddings:
        _input_embeddings(model, resolved.spec).requires_grad_(False)
    if config.lora:
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError:
            raise BoomError("--lora needs peft: pip install 'boom-merge[lora]'") from None

        lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, task_type="FEATURE_EXTRACTION")
        model[0].model = get_peft_model(model[0].model, lora)
        for module in list(model)[1:]:  # only the adapters train (and are checkpointed)
            module.requires_grad_(False)
    return model


def _input_embeddings(model: SentenceTransformer, spec: str) -> nn.Module:
    """The token-embedding table of the model's transformer (``--freeze-embeddings``)."""
    getter = getattr(getattr(model[0], "model", None), "get_input_embeddings", None)
    table = getter() if callable(getter) else None
    if not hasattr(table, "requires_grad_"):
        raise BoomError("--freeze-embeddings: the model's first module has no token-embedding table", path=spec)
    return table


def merge_lora(model: SentenceTransformer) -> None:
    """Fold the LoRA adapters into the full weights, so the member merges as a plain model."""
    model[0].model = model[0].model.merge_and_unload()


def _trainer_class(lora: bool) -> type[SentenceTransformerTrainer]:
    """The stock trainer, or for LoRA one that restores the adapter-only checkpoints it writes.

    Not yet ``add_adapter``: unchecked whether the stock resume (reloads the whole model) restores these.
    """
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
    callbacks: Sequence[TrainerCallback] = (),
    dev: DevSet | None = None,
) -> SentenceTransformerTrainer:
    """A ``SentenceTransformerTrainer`` (LoRA-aware) for ``config``, evaluating on ``dev`` when given."""
    if config.eval_steps is not None and dev is None:
        raise BoomError("--eval-steps needs a dev split: pass --dev (a BEIR dev split or held-out pairs)")
    return _trainer_class(config.lora)(
        model=model,
        args=training_arguments(config, checkpoints, seed),
        train_dataset=dataset,
        eval_dataset=dev.pairs if dev is not None else None,
        evaluator=dev.evaluator if dev is not None else None,
        loss=build_loss(model, config),
        callbacks=list(callbacks),
    )
