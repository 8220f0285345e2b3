"""Read training files of every accepted format and map their columns to FlagEmbedding records.

Owns: the accepted training file formats and the column conventions. It never decides what to do
with a bad line (the loader does) and never writes.

Formats: jsonl (one object a line), parquet, csv / tsv (with a header row), and tables of
``datasets`` (``save_to_disk`` directories, Hub datasets). Columns follow either the
FlagEmbedding layout (``query``, ``pos`` list, ``neg`` list, optional ``prompt``, ``type``)
or sentence-transformers' conventions, tried in this order:

* ``anchor``, ``positive``, negatives in columns named ``negative``, ``negative_1``, ...;
* ``query``, ``answer`` (negatives as above);
* ``sentence1``, ``sentence2``, negatives in ``sentence3``, ``sentence4``, ...;
* otherwise by position, as sentence-transformers reads a dataset: first column anchor,
  second positive, every further column a negative.

A ``label`` / ``score`` column marks scored pairs, which are no (anchor, positive)
training pairs: such a file is refused, as is one with fewer than two columns; every
such message lists the columns found. Readers yield ``(number, record)`` with a
``ValueError`` in place of a record for a line that cannot be read (invalid JSON, bytes
that are not UTF-8), so the loader can fail or skip it.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from boom_merge.errors import BoomError

logger = logging.getLogger(__name__)

#: file suffixes read as one dataset each, and the unit their errors count in
FILE_SUFFIXES = {".jsonl": "line", ".parquet": "row", ".csv": "row", ".tsv": "row"}
LABEL_COLUMNS = ("label", "labels", "score", "scores")
_NEGATIVE = re.compile(r"^negatives?(_?\d+)?$")
_SENTENCE = re.compile(r"^sentence(\d+)$")
Records = Iterator[tuple[int, Any]]


@dataclass(frozen=True)
class Columns:
    """Which columns give the query, the positive(s) and the negatives; ``flag``: FlagEmbedding records."""

    query: str = "query"
    positive: str = "pos"
    negatives: tuple[str, ...] = ()
    flag: bool = False

    def record(self, row: dict[str, Any]) -> dict[str, Any]:
        """The FlagEmbedding record of one row; ``ValueError`` naming the column if a text is missing."""
        if self.flag:
            return row
        query, positive = row.get(self.query), row.get(self.positive)
        for name, value in ((self.query, query), (self.positive, positive)):
            if not (isinstance(value, str) and value.strip()) and not (isinstance(value, list) and value):
                raise ValueError(f"column {name!r} must hold a non-empty text")
        if isinstance(query, list):
            raise ValueError(f"column {self.query!r} must hold one text, not a list")
        negatives = []
        for name in self.negatives:
            value = row.get(name)
            if isinstance(value, list):
                negatives.extend(value)
            elif value is not None and value != "":
                negatives.append(value)
        return {"query": query, "pos": positive if isinstance(positive, list) else [positive], "neg": negatives}


def _found(names: Sequence[str]) -> str:
    return f"columns found: {', '.join(names) if names else 'none'}"


def columns_of(names: Sequence[str], path: Path | str) -> Columns:
    """The convention of a table with these column ``names`` (in order); BoomError if none fits."""
    names = list(names)
    if {"query", "pos"} <= set(names):
        return Columns(flag=True)
    labels = [name for name in names if name in LABEL_COLUMNS]
    if labels:
        raise BoomError(
            f"column {labels[0]!r} holds scores or labels: scored pairs are not (anchor, positive) training "
            f"pairs; {_found(names)}",
            path=path,
        )
    named = [
        ("anchor", "positive", [n for n in names if _NEGATIVE.match(n)]),
        ("query", "answer", [n for n in names if _NEGATIVE.match(n)]),
        ("sentence1", "sentence2", [n for n in names if (m := _SENTENCE.match(n)) and int(m[1]) > 2]),
    ]
    for query, positive, negatives in named:
        if query in names and positive in names:
            columns = Columns(query, positive, tuple(negatives))
            break
    else:
        if len(names) < 2:
            raise BoomError(
                "needs (anchor, positive[, negative...]) columns, query/answer, sentence1/sentence2, "
                f"query/pos (FlagEmbedding) or at least two text columns; {_found(names)}",
                path=path,
            )
        columns = Columns(names[0], names[1], tuple(names[2:]))
    ignored = [n for n in names if n not in (columns.query, columns.positive, *columns.negatives)]
    if ignored:
        logger.info("%s: columns %s are not used", path, ", ".join(ignored))
    return columns


def check_arrow_types(schema: Any, columns: Columns, path: Path | str) -> None:
    """Refuse a typed table (parquet, ``datasets``) whose used columns do not hold text or lists of text."""
    import pyarrow as pa

    def is_text(kind: Any) -> bool:
        return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)

    used = [columns.query, columns.positive, *columns.negatives] if not columns.flag else []
    for name in used:
        kind = schema.field(name).type
        is_list = pa.types.is_list(kind) or pa.types.is_large_list(kind)
        if not (is_text(kind) or (is_list and name != columns.query and is_text(kind.value_type))):
            found = ", ".join(f"{field.name} ({field.type})" for field in schema)
            raise BoomError(f"column {name!r} does not hold text; columns found: {found}", path=path)


def convert(records: Iterable[tuple[int, Any]], columns: Columns | None, path: Path | str) -> Records:
    """Map rows to FlagEmbedding records; ``columns`` None: decided from the first object's keys."""
    for number, row in records:
        if isinstance(row, dict):
            columns = columns or columns_of(list(row), path)
            try:
                row = columns.record(row)
            except ValueError as error:
                row = error
        yield number, row


def _utf8_error(error: UnicodeDecodeError, data: bytes, offset: int = 0) -> str:
    byte = data[error.start : error.start + 1].hex()
    return f"not UTF-8 text (byte 0x{byte} at column {error.start - offset + 1})"


def jsonl_records(path: Path) -> Records:
    """(line number, parsed object or ValueError) for each non-blank line of a jsonl file."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                yield number, ValueError(_utf8_error(error, raw))
                continue
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as error:
                yield number, ValueError(f"invalid JSON ({error.msg} at column {error.colno})")


def csv_records(path: Path) -> tuple[list[str], Records]:
    """Column names and (0-based row, dict) of a csv (``.tsv``: tab-separated) file with a header row."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        start = data.rfind(b"\n", 0, error.start) + 1
        raise BoomError(f"line {line}: {_utf8_error(error, data, start)}", path=path) from None
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t" if path.suffix == ".tsv" else ",")
    rows = []  # (first line of the row in the file, its fields)
    try:
        line = 1
        for values in reader:
            rows.append((line, values))
            line = reader.line_num + 1
    except csv.Error as error:
        raise BoomError(f"line {reader.line_num}: not readable as CSV ({error})", path=path) from None
    header = rows[0][1] if rows else []
    for line, values in rows[1:]:
        if any(values) and len(values) != len(header):  # a comma in an unquoted text would shift the columns
            raise BoomError(f"line {line}: {len(values)} fields, the header has {len(header)} (quote a field "
                            "that holds the delimiter)", path=path)
    records = ((n, dict(zip(header, values, strict=True))) for n, (_, values) in enumerate(rows[1:]) if any(values))
    return header, records


def parquet_table(path: Path) -> Any:
    """The pyarrow table of a parquet file; BoomError if it is not one."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError) as error:
        reason = " ".join(str(error).split())
        raise BoomError(f"not a readable parquet file ({reason})", path=path) from None


def table_records(table: Any, path: Path | str) -> Records:
    """(0-based row, FlagEmbedding record) of a pyarrow table or ``datasets.Dataset``, its types checked."""
    names = list(table.column_names)
    columns = columns_of(names, path)
    schema = table.schema if hasattr(table, "schema") else table.data.schema
    check_arrow_types(schema, columns, path)
    rows = table.to_pylist() if hasattr(table, "to_pylist") else iter(table)
    return convert(enumerate(rows), columns, path)
