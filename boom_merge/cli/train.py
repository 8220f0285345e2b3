"""``boom-merge train`` and ``boom-merge train-update``: thin wrappers over boom_merge.training."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import click

from boom_merge.data.loading import ON_BAD_LINE_CHOICES
from boom_merge.data.sampling import SAMPLING_CHOICES
from boom_merge.errors import BoomError
from boom_merge.training import PRECISIONS, SCHEDULES, TrainConfig, train_members, train_update

_CONFIG_KEYS = tuple(field.name for field in fields(TrainConfig))

_TRAINING_OPTIONS = [
    click.option(
        "--schedule",
        type=click.Choice(SCHEDULES),
        default="bls",
        show_default=True,
        help="bls: each batch from one dataset, batches shuffled; mixed: instances shuffled across datasets; "
        "sequential: datasets one after another.",
    ),
    click.option("--batch-size", type=int, default=32, show_default=True, help="Queries per batch (per device)."),
    click.option(
        "--group-size",
        type=int,
        default=2,
        show_default=True,
        help="Passages per query: 1 positive + GROUP_SIZE-1 hard negatives (FlagEmbedding's train_group_size).",
    ),
    click.option("--temperature", type=float, default=0.05, show_default=True, help="InfoNCE temperature."),
    click.option(
        "--query-prompt", default=None, help="Prompt prepended to queries whose example has no 'prompt' field."
    ),
    click.option(
        "--max-seq-length", type=int, default=None, help="Truncate texts to this many tokens (default: the model's)."
    ),
    click.option("--lr", "learning_rate", type=float, default=2e-5, show_default=True, help="Peak learning rate."),
    click.option(
        "--warmup-ratio", type=float, default=0.1, show_default=True, help="Share of steps for linear warmup."
    ),
    click.option("--epochs", type=float, default=1.0, show_default=True, help="Passes over each member's sample."),
    click.option(
        "--max-steps", type=int, default=-1, show_default=True, help="Stop after this many steps (-1: use --epochs)."
    ),
    click.option("--gradient-accumulation", type=int, default=1, show_default=True, help="Batches per optimizer step."),
    click.option(
        "--precision",
        type=click.Choice(PRECISIONS),
        default="fp32",
        show_default=True,
        help="fp16/bf16 mixed precision needs a GPU.",
    ),
    click.option(
        "--lora/--no-lora",
        default=False,
        show_default=True,
        help="Train LoRA adapters, merged into full weights on save.",
    ),
    click.option("--lora-rank", type=int, default=16, show_default=True),
    click.option("--lora-alpha", type=int, default=32, show_default=True),
    click.option(
        "--save-steps", type=int, default=500, show_default=True, help="Checkpoint every N steps (for resuming)."
    ),
    click.option("--logging-steps", type=int, default=10, show_default=True),
    click.option("--seed", type=int, default=42, show_default=True, help="Base seed; member I uses SEED+I."),
    click.option(
        "--on-bad-line",
        type=click.Choice(ON_BAD_LINE_CHOICES),
        default="fail",
        show_default=True,
        help="Malformed data lines: stop with an error, or skip them (reported).",
    ),
    click.option("--force", is_flag=True, help="Replace existing outputs and checkpoints of other runs."),
]


def _training_options(command: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(_TRAINING_OPTIONS):
        command = option(command)
    return command


def _config(options: dict[str, Any]) -> TrainConfig:
    """Pop the training arguments out of the command's options into a TrainConfig."""
    return TrainConfig(**{key: options.pop(key) for key in _CONFIG_KEYS})


@click.command("train")
@click.option(
    "--data",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="Directory of NAME.jsonl files (FlagEmbedding format) or a Hugging Face dataset directory.",
)
@click.option("--base", required=True, help="Base sentence-transformers model (directory or cached Hub id).")
@click.option(
    "--ratios",
    default="paper4",
    show_default=True,
    help="Sample ratio per member in percent ('40,60,80,100'), a preset (paper4, paper5) or a complement pair '50,R'.",
)
@click.option(
    "--sampling",
    type=click.Choice(SAMPLING_CHOICES),
    default="without_replacement",
    show_default=True,
    help="Per-dataset sampling without replacement, or bootstrap (with replacement).",
)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Members directory (member-I-rRR/ inside).")
@click.option("--member", type=int, default=None, help="Train only member I (to fan members out across machines).")
@click.option("--launcher", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: members one after another in this process; ray: one Ray task per member.")
@click.option("--address", default=None,
              help="Ray cluster for --launcher ray (HOST:6379 or ray://HOST:10001); default RAY_ADDRESS or a local runtime.")
@_training_options
def train_command(
    data: Path, base: str, ratios: str, sampling: str, out: Path, member: int | None, launcher: str,
    address: str | None, **options: Any,
) -> None:
    """Train the bagging members: each on its own per-dataset sample of DATA."""
    config = _config(options)
    if launcher == "ray":
        if member is not None:
            raise BoomError("--member and --launcher ray exclude each other: Ray trains every member")
        from boom_merge.launchers import ray_train_members

        paths = ray_train_members(data, base, ratios, out, config, sampling=sampling, address=address, **options)
    elif address is not None:
        raise BoomError("--address is for --launcher ray")
    else:
        paths = train_members(data, base, ratios, out, config, sampling=sampling, member=member, **options)
    for path in paths:
        click.echo(str(path))


@click.command("train-update")
@click.option("--base", required=True, help="The base model that the members were trained from.")
@click.option("--new-data", required=True, type=click.Path(exists=True, path_type=Path), help="New training data.")
@click.option("--history-data", required=True, type=click.Path(exists=True, path_type=Path), help="Old training data.")
@click.option("--history-ratio", type=float, default=0.2, show_default=True, help="Share of each old dataset mixed in.")
@click.option(
    "--init",
    type=click.Choice(["base", "existing"]),
    default="base",
    show_default=True,
    help="Start from the base model (the paper's update models) or from --existing.",
)
@click.option("--existing", default=None, help="The current model, to start from with --init existing.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Output model directory.")
@_training_options
def train_update_command(
    base: str,
    new_data: Path,
    history_data: Path,
    history_ratio: float,
    init: str,
    existing: str | None,
    out: Path,
    **options: Any,
) -> None:
    """Train an update model on new data plus a sample of the old; merge it with `boom-merge incremental`."""
    config = _config(options)
    click.echo(
        str(
            train_update(
                base, new_data, history_data, history_ratio, out, config, init=init, existing=existing, **options
            )
        )
    )


COMMANDS = [train_command, train_update_command]
