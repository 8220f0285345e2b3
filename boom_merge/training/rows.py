"""Training rows and datasets: what the trainer sees of the sampled examples.

Owns: the rows and datasets handed to the trainer (hard negatives drawn, dataset sizes). It
never samples which examples are trained on (:mod:`boom_merge.data.sampling` does) and never
writes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from boom_merge.data.loading import Example, LoadedDataset
from boom_merge.data.sampling import ids_sha256
from boom_merge.errors import BoomError
from boom_merge.training.config import TrainConfig

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict

_NEGATIVE_DRAWS = 50  # random draws per missing negative before giving up


@dataclass(frozen=True)
class Part:
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


def sizes(datasets: Mapping[str, LoadedDataset]) -> dict[str, int]:
    return {name: len(data.examples) for name, data in datasets.items()}


def _negatives(example: Example, pool: Sequence[Example], count: int, rng: Any, dataset: str,
               source: Path | str | None) -> list[str]:
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
        f"dataset {dataset!r}: query {example.query[:40]!r} has too few hard negatives and the dataset too few "
        f"other passages to fill {count} (it holds {len(pool)} example{'s' * (len(pool) != 1)}); lower --group-size",
        path=source,
    )


def training_rows(
    examples: Sequence[Example], positions: Sequence[int], config: TrainConfig, seed: int, dataset: str = "",
    source: Path | str | None = None,
) -> dict[str, list[str]]:
    """Columns ``anchor, positive, negative_1..`` for the sampled examples (seeded choices).

    ``dataset`` names the examples' dataset (its prompt; errors) and ``source`` its file (errors).

    Each query gets its prompt prepended (its own, else ``config.prompt_for(dataset)``),
    one of its positives, and ``group_size - 1`` negatives, as FlagEmbedding does.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    default_prompt = config.prompt_for(dataset)
    columns: dict[str, list[str]] = {"anchor": [], "positive": []}
    columns.update({f"negative_{j}": [] for j in range(1, config.group_size)})
    for position in positions:
        example = examples[position]
        columns["anchor"].append((example.prompt or default_prompt) + example.query)
        columns["positive"].append(example.pos[int(rng.integers(len(example.pos)))])
        for j, text in enumerate(_negatives(example, examples, config.group_size - 1, rng, dataset, source), start=1):
            columns[f"negative_{j}"].append(text)
    return columns


def build_train_dataset(
    parts: Sequence[Part], names: Sequence[str], config: TrainConfig, seed: int
) -> Dataset | DatasetDict:
    """A DatasetDict with one dataset per source dataset, or one concatenated Dataset for ``mixed``."""
    from datasets import Dataset, DatasetDict, concatenate_datasets

    per_dataset = {
        f"{prefix}{name}": Dataset.from_dict(
            training_rows(part.datasets[name].examples, part.sample[name], config, seed, name, part.datasets[name].source)
        )
        for prefix, part in zip(names, parts, strict=True)
        for name in sorted(part.datasets)
        if part.sample[name]
    }
    if config.schedule == "mixed":
        return concatenate_datasets(list(per_dataset.values()))
    return DatasetDict(per_dataset)

