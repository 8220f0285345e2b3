"""Training arguments shared by every member, validated where they enter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from boom_merge.errors import BoomError

Schedule = Literal["bls", "sequential", "mixed"]
SCHEDULES: tuple[str, ...] = ("bls", "sequential", "mixed")
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16")


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
