"""Load training data by path or by name into the per-dataset examples the trainer uses.

Owns: turning data paths and names into per-dataset examples with stable ids. It never samples
(:mod:`.sampling` does) and never writes.

The native format is one jsonl file per dataset (the layout of bge-full-data that the
BOOM paper trained on), one object per line::

    {"query": str, "pos": [str, ...], "neg": [str, ...], "prompt": str?, "type": str?}

Also accepted (:func:`scan_training_data`): parquet / csv / tsv files and jsonl with
sentence-transformers' column conventions (:mod:`boom_merge.data.formats`), directories
of such files (one dataset per file), ``datasets.save_to_disk`` directories and
``datasets`` ids (``org/name``), several at once.

Every example keeps a stable id (its line number in a jsonl file, its 0-based row in a
table), so a bagging sample can be recorded as a hash of ids and reproduced later.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from boom_merge.data.formats import FILE_SUFFIXES, columns_of, convert, csv_records, jsonl_records
from boom_merge.data.formats import parquet_table, table_records
from boom_merge.errors import BoomError

logger = logging.getLogger(__name__)

OnBadLine = Literal["fail", "skip"]
ON_BAD_LINE_CHOICES: tuple[str, ...] = ("fail", "skip")
_REPORTED_BAD_LINES = 5
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
_FORMATS = ", ".join(f"*{suffix}" for suffix in FILE_SUFFIXES)


@dataclass(frozen=True)
class Example:
    """One training query with its positives and (hard) negatives."""

    id: int  # 1-based line number in a jsonl file, 0-based row index in a table
    query: str
    pos: tuple[str, ...]
    neg: tuple[str, ...] = ()
    prompt: str | None = None
    type: str | None = None


@dataclass
class LoadedDataset:
    """The examples of one dataset, and what was wrong with its source."""

    name: str
    source: Path | str  # a file or directory, or a datasets id
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


def _collect(
    name: str, source: Path | str, records: Iterable[tuple[int, Any]], on_bad_line: OnBadLine, unit: str
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


def is_datasets_id(spec: str | Path) -> bool:
    """True if ``spec`` names a Hugging Face dataset (``org/name``) and no local path."""
    return _HUB_ID.fullmatch(str(spec)) is not None and not Path(spec).exists()


def _tables(source: str | Path, tables: Mapping[str, Any], on_bad_line: OnBadLine) -> dict[str, LoadedDataset]:
    """One dataset per named table (a ``datasets.Dataset``)."""
    where = (lambda name: f"{source} [{name}]") if len(tables) > 1 else (lambda name: source)
    return {
        name: _collect(name, source, table_records(table, where(name)), on_bad_line, "row")
        for name, table in tables.items()
    }


def _load_saved(path: Path, split: str | None, on_bad_line: OnBadLine) -> dict[str, LoadedDataset]:
    """A ``save_to_disk`` directory: a Dataset, or a DatasetDict (one dataset per split, or only ``split``)."""
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except (OSError, ValueError) as error:
        raise BoomError(f"cannot read Hugging Face dataset: {_one_line(error)}", path=path) from None
    splits = dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {path.name: loaded}
    if split is not None and isinstance(loaded, datasets.DatasetDict):
        if split not in splits:
            raise BoomError(f"no split {split!r}; splits: {', '.join(splits)}", path=path)
        splits = {split: splits[split]}
    return _tables(path, splits, on_bad_line)


def _load_hub(spec: str, config: str | None, split: str | None, on_bad_line: OnBadLine) -> dict[str, LoadedDataset]:
    """A ``datasets`` id: downloaded when online, the datasets cache when offline; one dataset."""
    import datasets

    split = split or "train"
    try:
        table = datasets.load_dataset(spec, name=config, split=split)
    except Exception as error:  # datasets raises many types (not found, offline, gated, bad config)
        raise BoomError(
            f"{spec}: not a local file or directory, and the Hugging Face dataset cannot be loaded "
            f"(config {config!r}, split {split!r}): {_one_line(error)}"
        ) from None
    name = spec if config is None else f"{spec}:{config}"
    return {name: _collect(name, spec, table_records(table, spec), on_bad_line, "row")}


def _load_file(path: Path, on_bad_line: OnBadLine) -> LoadedDataset:
    """One dataset file (jsonl, parquet, csv, tsv), named after its stem."""
    unit = FILE_SUFFIXES.get(path.suffix)
    if unit is None:
        raise BoomError(f"unknown training data format {path.suffix!r}; expected {_FORMATS}", path=path)
    if path.is_dir():
        raise BoomError(f"is a directory, not a {path.suffix} file", path=path)
    try:
        if path.suffix == ".jsonl":
            records = convert(jsonl_records(path), None, path)
        elif path.suffix == ".parquet":
            records = table_records(parquet_table(path), path)
        else:
            header, rows = csv_records(path)
            records = convert(rows, columns_of(header, path) if header else None, path)
        return _collect(path.stem, path, records, on_bad_line, unit)
    except OSError as error:
        raise BoomError(f"cannot read: {error.strerror or error}", path=path) from None


def _load_one(
    spec: str | Path, config: str | None, split: str | None, on_bad_line: OnBadLine
) -> dict[str, LoadedDataset]:
    path = Path(spec)
    if not path.exists():
        if is_datasets_id(spec):
            return _load_hub(str(spec), config, split, on_bad_line)
        raise BoomError("training data not found", path=path)
    if path.is_dir() and _is_saved_dataset(path):
        return _load_saved(path, split, on_bad_line)
    if not path.is_dir() or path.suffix in FILE_SUFFIXES:
        return {path.stem: _load_file(path, on_bad_line)}
    files = sorted(f for f in path.iterdir() if f.suffix in FILE_SUFFIXES and not f.name.startswith("."))
    if not files:
        raise BoomError(f"no training data files ({_FORMATS}) and no Hugging Face dataset here", path=path)
    datasets: dict[str, LoadedDataset] = {}
    for file in files:
        loaded = _load_file(file, on_bad_line)
        if loaded.name in datasets:
            raise BoomError(f"two files give dataset {loaded.name!r}: {datasets[loaded.name].source} and {file}")
        datasets[loaded.name] = loaded
    return datasets


def _is_saved_dataset(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


DataSpec = str | Path


def scan_training_data(
    data: DataSpec | Sequence[DataSpec],
    on_bad_line: OnBadLine = "fail",
    *,
    config: str | None = None,
    split: str | None = None,
) -> dict[str, LoadedDataset]:
    """Load every dataset of ``data`` with its load report (bad lines, duplicates).

    ``data`` is one source or several (their datasets together; a name given twice is an
    error). A source is a directory of data files (one dataset per ``NAME.jsonl`` /
    ``.parquet`` / ``.csv`` / ``.tsv``), one such file, a ``datasets.save_to_disk``
    directory (a DatasetDict gives one dataset per split, or only ``split``), or a
    ``datasets`` id ``org/name`` that is not a local path (``config``; ``split``, default
    ``train``; the cache when offline). Columns follow :mod:`boom_merge.data.formats`.
    Empty datasets are reported and left out; if nothing is left, that is an error.
    """
    if on_bad_line not in ON_BAD_LINE_CHOICES:
        raise BoomError(f"on_bad_line must be one of {ON_BAD_LINE_CHOICES}, got {on_bad_line!r}")
    specs = [data] if isinstance(data, (str, Path)) else list(data)
    if not specs:
        raise BoomError("no training data given")
    if config is not None and not any(map(is_datasets_id, specs)):
        raise BoomError(f"--data-config {config!r} applies to a Hugging Face dataset id (org/name), and none is given")
    datasets: dict[str, LoadedDataset] = {}
    for spec in specs:
        for name, loaded in _load_one(spec, config, split, on_bad_line).items():
            if name in datasets:
                raise BoomError(f"dataset {name!r} is given twice: by {datasets[name].source} and by {loaded.source}")
            datasets[name] = loaded
    _report(datasets)
    if not datasets:
        raise BoomError("no training examples: every dataset is empty", path=specs[0] if len(specs) == 1 else None)
    return datasets


def load_training_data(
    data: DataSpec | Sequence[DataSpec],
    on_bad_line: OnBadLine = "fail",
    *,
    config: str | None = None,
    split: str | None = None,
) -> dict[str, list[Example]]:
    """Examples of each dataset of ``data``, by dataset name (see :func:`scan_training_data`)."""
    return {
        name: dataset.examples
        for name, dataset in scan_training_data(data, on_bad_line, config=config, split=split).items()
    }
