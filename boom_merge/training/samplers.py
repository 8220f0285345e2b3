"""Batch samplers of our own, at module level so that checkpoints can pickle them.

Owns: our batch sampler classes. It may not import other boom-merge modules.

The trainer saves its arguments (which name the sampler class) with ``torch.save``
at every checkpoint; a class defined inside a function cannot be pickled. This
module imports sentence-transformers, so import it lazily.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import accumulate

from sentence_transformers.base.sampler import MultiDatasetDefaultBatchSampler


class SequentialDatasetBatchSampler(MultiDatasetDefaultBatchSampler):
    """The ``sequential`` schedule: all batches of the first dataset, then all of the second, ...
    (each shuffled inside)."""

    def __iter__(self) -> Iterator[list[int]]:
        offsets = [0, *accumulate(len(d) for d in self.dataset.datasets)]
        for offset, sampler in zip(offsets, self.batch_samplers, strict=False):
            for batch in sampler:
                yield [index + offset for index in batch]

    def __len__(self) -> int:
        return sum(len(sampler) for sampler in self.batch_samplers)
