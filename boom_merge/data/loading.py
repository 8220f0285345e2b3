"""Load training data: FlagEmbedding-style jsonl directories or Hugging Face datasets.

The native format is one jsonl file per dataset (the layout of bge-full-data that the
BOOM paper trained on), one object per line::

    {"query": str, "pos": [str, ...], "neg": [str, ...], "prompt": str?, "type": str?}

A directory written by ``datasets.save_to_disk`` with sentence-transformers columns
(``anchor``, ``positive``, ``negative`` or ``negative_1`` ...) is accepted as well; a
``DatasetDict`` gives one dataset per split name.

Every example keeps a stable id (its line or row number), so a bagging sample can be
recorded as a hash of ids and reproduced later.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from boom_merge.errors import BoomError

logger = logging.getLogger(__name__)

OnBadLine = Literal["fail", "skip"]
ON_BAD_LINE_CHOICES: tuple[str, ...] = ("fail", "skip")
_REPORTED_BAD_LINES = 5


@dataclass(frozen=True)
class Example:
    """One training query with its positives and (hard) negatives."""

    id: int  # 1-based line number in a jsonl file, 0-based row index in a HF dataset
    query: str
    pos: tuple[str, ...]
    neg: tuple[str, ...] = ()
    prompt: str | None = None
    type: str | None = None


@dataclass
class LoadedDataset:
    """The examples of one dataset, and what was wrong with its source."""

    name: str
    source: Path
    examples: list[Example]
    bad_lines: list[tuple[int, str]] = field(default_factory=list)
    duplicate_pairs: int = 0

    def summary(self) -> dict[str, Any]:
        """Counts for manifests: examples, skipped bad lines, duplicate (query, pos) pairs."""
        return {
            "examples": len(self.examples),
            "skipped_lines": len(self.bad_lines),
            "duplicate_pairs": self.duplicate_pairs,
        }


def _text_list(value: Any, key: str, *, required: bool) -> tuple[str, ...]:
    if value is None and not required:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError(f"'{key}' must be a list of non-empty strings")
    if required and not value:
        raise ValueError(f"'{key}' must hold at least one text")
    return tuple(value)


def _optional_str(record: dict[str, Any], key: str) -> str | None:
    value = record.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"'{key}' must be a string")
    return value or None


def parse_record(record: Any, example_id: int) -> Example:
    """Validate one FlagEmbedding record; raise ``ValueError`` saying what is wrong."""
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    query = record.get("query")
    if not isinstance(query, str) or not query.strip():
        raise ValueError("'query' must be a non-empty string")
    return Example(
        id=example_id,
        query=query,
        pos=_text_list(record.get("pos"), "pos", required=True),
        neg=_text_list(record.get("neg"), "neg", required=False),
        prompt=_optional_str(record, "prompt"),
        type=_optional_str(record, "type"),
    )


def _jsonl_records(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield (line number, parsed JSON or the ValueError) for each non-blank line."""
    try:
        handle = path.open("rb")
    except OSError as error:
        raise BoomError(f"cannot read the training data: {error.strerror}", path=path) from None
    with handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as error:
                yield number, ValueError(f"not UTF-8 text (invalid byte 0x{raw[error.start]:02x} at position {error.start + 1})")
                continue
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as error:
                yield number, ValueError(f"invalid JSON ({error.msg} at column {error.colno})")


def _collect(
    name: str, source: Path, records: Iterable[tuple[int, Any]], on_bad_line: OnBadLine, unit: str
) -> LoadedDataset:
    """Parse records into a dataset; fail on the first bad one or skip and remember it."""
    dataset = LoadedDataset(name=name, source=source, examples=[])
    seen: set[tuple[str, str]] = set()
    for number, record in records:
        try:
            if isinstance(record, ValueError):
                raise record
            example = parse_record(record, number)
        except ValueError as error:
            if on_bad_line == "fail":
                raise BoomError(
                    f"{unit} {number}: {error} (use --on-bad-line skip to skip bad lines)", path=source
                ) from None
            dataset.bad_lines.append((number, str(error)))
            continue
        dataset.examples.append(example)
        pairs = {(example.query, pos) for pos in example.pos}
        dataset.duplicate_pairs += len(pairs & seen)
        seen |= pairs
    return dataset


def _hf_records(rows: Iterable[dict[str, Any]]) -> Iterator[tuple[int, Any]]:
    """Map sentence-transformers columns (anchor/positive/negative*) to FlagEmbedding records."""
    for index, row in enumerate(rows):
        if "query" in row:
            yield index, row
            continue
        negatives = [row[key] for key in sorted(row) if key.startswith("negative") and row[key] is not None]
        flat = [text for value in negatives for text in (value if isinstance(value, list) else [value])]
        positive = row.get("positive")
        yield (
            index,
            {"query": row.get("anchor"), "pos": positive if isinstance(positive, list) else [positive], "neg": flat},
        )


def _load_hf_dir(path: Path, on_bad_line: OnBadLine) -> dict[str, LoadedDataset]:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except (OSError, ValueError) as error:
        raise BoomError(f"cannot read Hugging Face dataset: {error}", path=path) from None
    splits = loaded if isinstance(loaded, datasets.DatasetDict) else {path.name: loaded}
    result = {}
    for name, split in splits.items():
        columns = set(split.column_names)
        if not ({"anchor", "positive"} <= columns or {"query", "pos"} <= columns):
            raise BoomError(
                f"dataset '{name}' needs columns anchor/positive[/negative] or query/pos[/neg], has {sorted(columns)}",
                path=path,
            )
        result[name] = _collect(name, path, _hf_records(split), on_bad_line, unit="row")
    return result


def _is_hf_dir(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def _report(datasets: dict[str, LoadedDataset]) -> None:
    """Log skipped lines and duplicates; drop empty datasets with a warning."""
    for name, dataset in list(datasets.items()):
        if dataset.bad_lines:
            shown = "; ".join(f"line {n}: {why}" for n, why in dataset.bad_lines[:_REPORTED_BAD_LINES])
            more = len(dataset.bad_lines) - _REPORTED_BAD_LINES
            logger.warning(
                "%s: skipped %d bad line(s): %s%s",
                dataset.source,
                len(dataset.bad_lines),
                shown,
                f"; and {more} more" if more > 0 else "",
            )
        if dataset.duplicate_pairs:
            logger.warning(
                "%s: %d duplicate (query, pos) pair(s) in dataset '%s'", dataset.source, dataset.duplicate_pairs, name
            )
        if not dataset.examples:
            logger.warning("%s: dataset '%s' is empty and is left out", dataset.source, name)
            del datasets[name]


def scan_training_data(path: str | Path, on_bad_line: OnBadLine = "fail") -> dict[str, LoadedDataset]:
    """Load every dataset under ``path`` with its load report (bad lines, duplicates).

    ``path`` is a directory of ``NAME.jsonl`` files, a single jsonl file, or a
    ``datasets.save_to_disk`` directory. Empty datasets are reported and left out;
    if nothing is left, that is an error.
    """
    if on_bad_line not in ON_BAD_LINE_CHOICES:
        raise BoomError(f"on_bad_line must be one of {ON_BAD_LINE_CHOICES}, got {on_bad_line!r}")
    path = Path(path)
    if not path.exists():
        raise BoomError("training data not found", path=path)
    if path.is_dir() and _is_hf_dir(path):
        datasets = _load_hf_dir(path, on_bad_line)
    else:
        files = [path] if path.is_file() else sorted(path.glob("*.jsonl"))
        if not files:
            raise BoomError("no *.jsonl files and no Hugging Face dataset in this directory", path=path)
        for file in files:
            if not file.is_file():
                raise BoomError("not a jsonl file (a directory or special file named like one)", path=file)
        datasets = {f.stem: _collect(f.stem, f, _jsonl_records(f), on_bad_line, unit="line") for f in files}
    _report(datasets)
    if not datasets:
        raise BoomError("no training examples: every dataset is empty", path=path)
    return datasets


def load_training_data(path: str | Path, on_bad_line: OnBadLine = "fail") -> dict[str, list[Example]]:
    """Examples of each dataset under ``path``, by dataset name (see :func:`scan_training_data`)."""
    return {name: dataset.examples for name, dataset in scan_training_data(path, on_bad_line).items()}
