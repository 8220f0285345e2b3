"""Train bagging members and update models with ``SentenceTransformerTrainer``.

Owns: the training stage's public names. It may not import :mod:`boom_merge.merge.pipeline`, tuning or
the CLI; from evaluation it reads only dev splits (:mod:`boom_merge.evaluation.corpus`, in
``dev``), and it writes ``boom_member.json`` only through :mod:`boom_merge.lineage`.

A member is the base model fine-tuned with InfoNCE (MultipleNegativesRankingLoss, or its
GradCache variant, with a temperature, in-batch plus hard negatives, optionally gathered
across DDP processes, no duplicate texts in a batch) on a per-dataset subsample of the
training data. Three batch schedules:

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

Rooms: ``config`` (the options), ``members`` (entry points), ``rows`` (what the trainer
sees), ``trainer`` (loss, arguments, trainer), ``runner`` (one run's files), ``dev``
(evaluation during training), ``keep`` (kept checkpoints), ``samplers``, ``launchers``
(Ray), ``manifest`` (the member record; owned with :mod:`boom_merge.lineage`).
This package only re-exports.
"""

from __future__ import annotations

from boom_merge.training.config import LOSSES, PRECISIONS, SCHEDULES, TrainConfig
from boom_merge.training.members import train_member, train_members, train_update
from boom_merge.training.rows import build_train_dataset, training_rows

__all__ = [
    "LOSSES",
    "PRECISIONS",
    "SCHEDULES",
    "TrainConfig",
    "build_train_dataset",
    "train_member",
    "train_members",
    "train_update",
    "training_rows",
]
