"""One training run through ``SentenceTransformerTrainer``: work dir, checkpoints, resume, atomic output.

Owns the run's files (``.NAME.work/`` beside the output, the output itself); the trainer
is built by ``training.trainer``, the rows by ``training.rows``. It may not configure the
trainer or choose the rows itself, and it writes ``boom_member.json`` only through
:mod:`boom_merge.lineage`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from boom_merge.errors import BoomError
from boom_merge.lineage import write_member_manifest
from boom_merge.model_refs import subnormals_flushed
from boom_merge.outputs import atomic_output_dir, check_output, output_lock
from boom_merge.training.config import REPORTING_ONLY, TrainConfig
from boom_merge.training.keep import keep_callback, move_kept
from boom_merge.training.manifest import identity
from boom_merge.training.rows import Part, build_train_dataset
from boom_merge.training.trainer import load_model, make_trainer, merge_lora

if TYPE_CHECKING:
    from transformers import TrainerCallback

    from boom_merge.model_refs import ResolvedModel
    from boom_merge.training.dev import DevSet

logger = logging.getLogger(__name__)


def run_identity(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest's identity keys without the options that never change the weights (REPORTING_ONLY)."""
    found = identity(manifest)
    found["training_args"] = {k: v for k, v in (found["training_args"] or {}).items() if k not in REPORTING_ONLY}
    return found


def _main_process() -> bool:
    """Whether this process writes the output: global rank 0 under torchrun / accelerate, else the only one."""
    return os.environ.get("RANK", "0") == "0"


@contextlib.contextmanager
def output_guard(out: Path, inputs: Sequence[str | Path], *, force: bool) -> Iterator[None]:
    """Check ``out`` against the output rules, then hold its lock for the block (main process only:
    the other ranks never write it). Re-entrant; a concurrent run to ``out`` fails fast with
    ``another boom-merge is writing OUT``."""
    check_output(out, inputs=inputs, force=force)
    with output_lock(out) if _main_process() else contextlib.nullcontext():
        yield


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
    init_model: ResolvedModel,
    parts: Sequence[Part],
    names: Sequence[str],
    manifest: dict[str, Any],
    config: TrainConfig,
    seed: int,
    *,
    force: bool,
    callbacks: Sequence[TrainerCallback] = (),
    dev: DevSet | None = None,
    inputs: Sequence[str | Path] = (),
) -> Path:
    """Train from ``init_model`` on the sampled parts; write ``out`` with ``manifest``.

    ``inputs`` (data dirs) and ``init_model`` are what ``out`` may not overwrite. Under
    torchrun / accelerate every process runs this; the main one keeps the work directory
    and writes the output, the others wait for it.
    """
    inputs = [init_model.path, *inputs]
    with output_guard(out, inputs, force=force):
        return _run(out, init_model, parts, names, manifest, config, seed, force=force,
                    callbacks=callbacks, dev=dev, inputs=inputs)  # fmt: skip


def _run(
    out: Path, init_model: ResolvedModel, parts: Sequence[Part], names: Sequence[str], manifest: dict[str, Any],
    config: TrainConfig, seed: int, *, force: bool, callbacks: Sequence[TrainerCallback], dev: DevSet | None,
    inputs: Sequence[str | Path],
) -> Path:
    """:func:`run_training` with the output checked and (on the main process) locked."""
    from transformers import set_seed

    work = out.parent / f".{out.name}.work"
    checkpoints = work / "checkpoints"
    set_seed(seed)  # LoRA initialisation draws random numbers before the trainer seeds them
    model = load_model(init_model, config)
    extra = [keep_callback(model, work, config.keep_checkpoints)] if config.keep_checkpoints else []
    dataset = build_train_dataset(parts, names, config, seed)
    trainer = make_trainer(model, dataset, config, checkpoints, seed, [*callbacks, *extra], dev)
    main_process = trainer.is_world_process_zero()
    if main_process:
        _prepare_work_dir(work, run_identity(manifest), force)
    trainer.accelerator.wait_for_everyone()
    resume = _last_complete_checkpoint(checkpoints)
    if resume:
        logger.info("%s: resuming from %s", out.name, resume)
    flushed = subnormals_flushed() if trainer.args.device.type == "cpu" else contextlib.nullcontext()
    with flushed:
        result = trainer.train(resume_from_checkpoint=resume)
    if config.lora:
        merge_lora(model)
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
    if dev is not None:
        manifest["dev"] = dev.report() | {"eval_steps": config.eval_steps, "last": _last_eval(trainer)}
    if main_process:
        with atomic_output_dir(out, force=force, inputs=inputs) as tmp:
            save_trained(model, tmp)
            write_member_manifest(tmp, manifest)
            move_kept(work, tmp, manifest, trainer.state.max_steps)
        shutil.rmtree(work, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    return out


def save_trained(model: Any, path: str | Path) -> None:
    """Save as sentence-transformers does; a card naming its base model also says ``base_model_relation:
    finetune`` (sentence-transformers writes no relation, which the Hub then guesses)."""
    from huggingface_hub import metadata_load, metadata_save

    model.save(str(path))
    card = Path(path) / "README.md"
    metadata = metadata_load(card) if card.is_file() else None
    if metadata and metadata.get("base_model"):
        metadata_save(card, {**metadata, "base_model_relation": "finetune"})


def _last_eval(trainer: Any) -> dict[str, Any] | None:
    """The last evaluation's metrics from the trainer's log history (one entry per eval dataset, merged)."""
    evals = [entry for entry in trainer.state.log_history if any(k.startswith("eval_") for k in entry)]
    if not evals:
        return None
    last = evals[-1]["step"]
    return {key: value for entry in evals if entry["step"] == last for key, value in entry.items()}
