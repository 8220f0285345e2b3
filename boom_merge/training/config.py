"""Training arguments shared by every member: one field per option, validated where they enter.

Owns: the training options (names, defaults, help, validation). It may not import click, torch
or another training module.

:class:`TrainConfig` is the one list of training options. Each field's metadata carries
its help text (and, where it differs from ``--field-name``, its flag spellings); the CLI
generates its options from these fields (``boom_merge.cli._options.config_options``), so a default lives
here only. This module imports neither click nor torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from boom_merge.errors import BoomError

Schedule = Literal["bls", "sequential", "mixed"]
Precision = Literal["fp32", "fp16", "bf16"]
Loss = Literal["mnrl", "cached-mnrl"]
SCHEDULES: tuple[str, ...] = ("bls", "sequential", "mixed")
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16")
LOSSES: tuple[str, ...] = ("mnrl", "cached-mnrl")
REPORTING_ONLY: tuple[str, ...] = ("report_to", "logging_steps", "eval_steps", "save_steps")
"""Options that change what a run reports or how often it checkpoints, never the weights: a finished
member or a run's checkpoints are reused when only these differ."""
INSTRUCTION_TEMPLATE = "Instruct: {task}\nQuery: "
"""Qwen3-Embedding's (and the BOOM paper's) query prompt for decoder embedders."""


def _opt(default: Any, help: str, *flags: str) -> Any:  # noqa: A002 - the click name
    """A field with its CLI help (and flag spellings, when not just ``--field-name``)."""
    return field(default=default, metadata={"help": help, "flags": flags})


@dataclass(frozen=True)
class TrainConfig:
    """Training arguments shared by all members (validated on creation).

    ``group_size`` follows FlagEmbedding's ``train_group_size``: one positive plus
    ``group_size - 1`` hard negatives per query. A query's prompt is, in order: the
    example's own ``prompt``, its dataset's entry in ``instructions`` (formatted into
    ``instruction_template``), ``query_prompt`` (by default the trained model's own ``query`` prompt:
    ``training.members`` fills it in).
    """

    schedule: Schedule = _opt(
        "bls",
        "bls: each batch from one dataset, batches shuffled; mixed: instances shuffled across datasets; "
        "sequential: datasets one after another.",
    )
    batch_size: int = _opt(32, "Queries per batch (per device).")
    group_size: int = _opt(
        2, "Passages per query: 1 positive + GROUP_SIZE-1 hard negatives (FlagEmbedding's train_group_size)."
    )
    temperature: float = _opt(0.05, "InfoNCE temperature (the loss's scale is 1/T; the paper's 0.6B recipe: 0.02).")
    loss: Loss = _opt(
        "mnrl",
        "mnrl: MultipleNegativesRankingLoss; cached-mnrl: the same loss with GradCache "
        "(CachedMultipleNegativesRankingLoss), for big batches in little memory.",
    )
    mini_batch_size: int = _opt(16, "cached-mnrl: texts per forward/backward chunk (memory, not the result).")
    gather_across_devices: bool = _opt(
        False, "In-batch negatives from every DDP process (the paper's --negatives_cross_device)."
    )
    gradient_checkpointing: bool = _opt(False, "Recompute activations in the backward pass (less memory, slower).")
    freeze_embeddings: bool = _opt(
        False,
        "Keep the token-embedding table fixed (a decoder's vocabulary table is most of a small LM: "
        "faster steps, less optimizer memory; members then share it exactly).",
    )
    query_prompt: str | None = _opt(
        None,
        "Prompt prepended to queries without a 'prompt' field or an instruction "
        "(default: the 'query' prompt the trained model stores, as evaluation uses it).",
    )
    instructions: dict[str, str] | None = _opt(
        None,
        "Per-dataset task instruction, NAME=TASK (repeatable): queries of dataset NAME get "
        "INSTRUCTION_TEMPLATE with {task} filled in (e.g. for Qwen3-Embedding).",
        "--instruction",
    )
    instruction_template: str = _opt(INSTRUCTION_TEMPLATE, "Query prompt made from an instruction; {task} is replaced (type \\n for a newline).")
    max_seq_length: int | None = _opt(None, "Truncate texts to this many tokens (default: the model's).")
    learning_rate: float = _opt(2e-5, "Peak learning rate.", "--lr", "--learning-rate")
    warmup_ratio: float = _opt(0.1, "Share of steps for linear warmup.")
    epochs: float = _opt(1.0, "Passes over each member's sample.")
    max_steps: int = _opt(-1, "Stop after this many steps (-1: use --epochs).")
    gradient_accumulation: int = _opt(1, "Batches per optimizer step.")
    precision: Precision = _opt("fp32", "fp16/bf16 mixed precision needs a GPU.")
    lora: bool = _opt(False, "Train LoRA adapters, merged into full weights on save.")
    lora_rank: int = _opt(16, "LoRA rank r.")
    lora_alpha: int = _opt(32, "LoRA alpha.")
    save_steps: int = _opt(500, "Checkpoint every N steps (for resuming).")
    logging_steps: int = _opt(10, "Log the loss every N steps.")
    eval_steps: int | None = _opt(
        None,
        "Evaluate every N steps on --dev: nDCG@10 on a BEIR dev split (default DATA/../dev), "
        "or the loss on held-out pairs.",
    )
    report_to: str = _opt("none", "Where the trainer reports: none, tensorboard, wandb, ... (comma-separated).")
    keep_checkpoints: int = _opt(
        0, "Keep K evenly spaced checkpoints of each member as complete models in MEMBER/checkpoints/ (for soups)."
    )

    def __post_init__(self) -> None:
        problems = [
            f"schedule must be one of {SCHEDULES}" if self.schedule not in SCHEDULES else "",
            f"precision must be one of {PRECISIONS}" if self.precision not in PRECISIONS else "",
            f"loss must be one of {LOSSES}" if self.loss not in LOSSES else "",
            "batch size must be at least 2 (in-batch negatives)" if self.batch_size < 2 else "",
            "mini batch size must be at least 1" if self.mini_batch_size < 1 else "",
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
            "eval steps must be positive" if self.eval_steps is not None and self.eval_steps < 1 else "",
            "keep checkpoints must be 0 or more" if self.keep_checkpoints < 0 else "",
            "keep checkpoints needs full weights: not with LoRA" if self.keep_checkpoints and self.lora else "",
            "freeze embeddings is for full fine-tuning: LoRA leaves them fixed anyway"
            if self.freeze_embeddings and self.lora
            else "",
            "instruction template must contain {task}" if "{task}" not in self.instruction_template else "",
            "instructions must map dataset names to non-empty texts"
            if self.instructions is not None
            and not all(isinstance(k, str) and isinstance(v, str) and v for k, v in self.instructions.items())
            else "",
        ]
        if problem := "; ".join(p for p in problems if p):
            raise BoomError(f"invalid training configuration: {problem}")

    def prompt_for(self, dataset: str) -> str:
        """The query prompt of ``dataset`` for examples without their own prompt."""
        task = (self.instructions or {}).get(dataset)
        return self.instruction_template.replace("{task}", task) if task else self.query_prompt or ""
