"""``boom-merge train`` and ``boom-merge train-update``: thin wrappers over boom_merge.training.

Owns: the ``train`` and ``train-update`` commands and their options generated from
``TrainConfig``. It may not train, sample or hold a training default itself
(:mod:`boom_merge.training` does).

The training options are generated from :class:`~boom_merge.training.TrainConfig`'s fields
(type, default, help and flag spellings) by :func:`boom_merge.cli._options.config_options`: a
default or a help text lives in the config only.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from boom_merge.cli._options import config_options
from boom_merge.data.loading import ON_BAD_LINE_CHOICES
from boom_merge.data.sampling import SAMPLING_CHOICES
from boom_merge.errors import BoomError
from boom_merge.training import TrainConfig, train_members, train_update


def _training_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add TrainConfig's options plus --seed, --on-bad-line, --dev, --force; hand the command ``config``."""
    extra = [
        click.option("--seed", type=int, default=42, show_default=True, help="Base seed; member I uses SEED+I."),
        click.option(
            "--on-bad-line",
            type=click.Choice(ON_BAD_LINE_CHOICES),
            default="fail",
            show_default=True,
            help="Malformed data lines: stop with an error, or skip them (reported).",
        ),
        click.option(
            "--dev",
            type=click.Path(exists=True, path_type=Path),
            default=None,
            help="What --eval-steps evaluates on: a BEIR dev split (NAME/{queries,corpus}.jsonl, NAME/qrels/dev.tsv) "
            "or held-out pairs (NAME.jsonl); default DATA/../dev.",
        ),
        click.option("--force", is_flag=True, help="Replace existing outputs and checkpoints of other runs."),
        click.option("--data-config", default=None, help="Configuration (subset) of a Hugging Face dataset id."),
        click.option(
            "--data-split", default=None, help="Split of a Hugging Face dataset id (default train) or DatasetDict dir."
        ),
    ]
    for option in reversed(extra):  # listed after TrainConfig's options in --help
        command = option(command)
    return config_options(TrainConfig)(command)


@click.command(
    "train",
    epilog="""\b
Examples:
  boom-merge train --data corpus/train --base sentence-transformers/all-MiniLM-L6-v2 --ratios 40,60,80,100 -o members/
  boom-merge train --data corpus/train --base Qwen/Qwen3-Embedding-0.6B --temperature 0.02 --group-size 8 \\
      --loss cached-mnrl --batch-size 256 --mini-batch-size 32 --gather-across-devices \\
      --instruction wordnet='Given a word, retrieve its definition' -o members/ --member 0
  boom-merge train --data sentence-transformers/all-nli --data-config triplet --data pairs.parquet --base BASE -o m/
  torchrun --nproc_per_node 4 --no-python boom-merge train ... --member 2
  boom-merge train ... --eval-steps 50 --keep-checkpoints 3      # dev nDCG@10 during training; soups later
""",
)
@click.option(
    "--data",
    required=True,
    multiple=True,
    help="Training data (repeatable: the datasets of all together): a directory of NAME.jsonl / .parquet / .csv / "
    ".tsv files (one dataset each; "
    "FlagEmbedding or sentence-transformers columns), one such file, a datasets.save_to_disk directory "
    "or a Hugging Face dataset id org/name (split train; the cache when offline).",
)
@click.option(
    "--base", required=True, help="Base sentence-transformers model: a directory or a Hub id org/name[@REVISION]."
)
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
@click.option(
    "-o", "--out", required=True, type=click.Path(path_type=Path), help="Members directory (member-I-rRR/ inside)."
)
@click.option("--member", type=int, default=None, help="Train only member I (to fan members out across machines).")
@click.option(
    "--launcher",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="local: members one after another in this process; ray: one Ray task per member.",
)
@click.option(
    "--address",
    default=None,
    help="Ray cluster for --launcher ray (HOST:6379 or ray://HOST:10001); default RAY_ADDRESS or a local runtime.",
)
@_training_options
def train_command(
    data: tuple[str, ...],
    base: str,
    ratios: str,
    sampling: str,
    out: Path,
    member: int | None,
    launcher: str,
    address: str | None,
    config: TrainConfig,
    **options: Any,
) -> None:
    """Train the bagging members: each on its own per-dataset sample of DATA."""
    data = data[0] if len(data) == 1 else list(data)
    if launcher == "ray":
        if member is not None:
            raise BoomError("--member and --launcher ray exclude each other: Ray trains every member")
        from boom_merge.training.launchers import ray_train_members

        paths = ray_train_members(data, base, ratios, out, config, sampling=sampling, address=address, **options)
    elif address is not None:
        raise BoomError("--address is for --launcher ray")
    else:
        paths = train_members(data, base, ratios, out, config, sampling=sampling, member=member, **options)
    for path in paths:
        click.echo(str(path))


@click.command(
    "train-update",
    epilog="""\b
Examples:
  boom-merge train-update --base BASE --new-data new/ --history-data corpus/train --history-ratio 0.2 -o update/
  boom-merge train-update --base BASE --init existing --existing merged/ --new-data new/ \\
      --history-data corpus/train -o update/
""",
)
@click.option(
    "--base", required=True, help="The base model that the members were trained from (directory or Hub id)."
)
@click.option("--new-data", required=True, help="New training data (any form --data of `boom-merge train` takes).")
@click.option("--history-data", required=True, help="Old training data (any form --data of `boom-merge train` takes).")
@click.option("--history-ratio", type=float, default=0.2, show_default=True, help="Share of each old dataset mixed in.")
@click.option(
    "--init",
    type=click.Choice(["base", "existing"]),
    default="base",
    show_default=True,
    help="Start from the base model (the paper's update models) or from --existing.",
)
@click.option("--existing", default=None, help="The current model, to start from with --init existing.")
@click.option("-o", "--out", required=True, type=click.Path(path_type=Path), help="Output model directory.")
@_training_options
def train_update_command(
    base: str,
    new_data: str,
    history_data: str,
    history_ratio: float,
    init: str,
    existing: str | None,
    out: Path,
    config: TrainConfig,
    **options: Any,
) -> None:
    """Train an update model on new data plus a sample of the old; merge it with `boom-merge incremental`."""
    path = train_update(base, new_data, history_data, history_ratio, out, config, init=init, existing=existing, **options)
    click.echo(str(path))


COMMANDS = [train_command, train_update_command]
