"""Which datasets a model was trained on, for in-domain / out-of-domain tagging.

A task is in-domain for a model when its dataset name is among the model's training
datasets. They are read from files that training and merging write into the model:

- ``boom_member.json`` (members and update models): names are the keys (or items)
  of ``"datasets"``; an update model's ``"new_data"`` and ``"history"`` records
  (``{"path", "datasets": {...}}``) add theirs: it saw both;
- ``boom_lineage.json`` (merged models): every record in ``"inputs"`` either lists
  ``"datasets"`` itself or points (``"manifest"``, ``"path"`` or ``"model"``, relative
  to the model) at a member's ``boom_member.json`` or at a model directory.

No file, or an input that cannot be read, means "unknown" (None): then every task is
reported as OOD-unknown, never silently as OOD.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from boom_merge.lineage import LINEAGE_FILE, MEMBER_FILE

logger = logging.getLogger(__name__)

_POINTERS = ("manifest", "path", "model")
_NESTED = ("new_data", "history", "inputs")
_MAX_DEPTH = 16


def training_datasets(model_dir: str | Path) -> frozenset[str] | None:
    """The names of the datasets a model was trained on, or None when unknown."""
    return _from_dir(Path(model_dir), depth=0)


def _from_dir(model_dir: Path, depth: int) -> frozenset[str] | None:
    files = [model_dir / name for name in (MEMBER_FILE, LINEAGE_FILE) if (model_dir / name).is_file()]
    if not files:
        return None
    names: set[str] = set()
    for path in files:
        found = _from_file(path, depth)
        if found is None:
            return None
        names |= found
    return frozenset(names)


def _from_file(path: Path, depth: int) -> frozenset[str] | None:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        logger.warning("%s: unreadable (%s); training datasets unknown", path, error)
        return None
    return _from_record(record, path.parent, depth)


def _from_record(record: Any, base: Path, depth: int) -> frozenset[str] | None:
    """Names in one record: its ``datasets`` plus those of its sub-records and inputs."""
    if isinstance(record, str):
        return _from_pointer(base / record, depth)
    if not isinstance(record, dict):
        return None
    if not any(key in record for key in ("datasets", *_NESTED)):
        pointer = next((record[key] for key in _POINTERS if isinstance(record.get(key), str)), None)
        return _from_pointer(base / pointer, depth) if pointer else None
    names = set(_names(record.get("datasets")))
    for entry in (entry for key in _NESTED for entry in _entries(record.get(key))):
        found = _from_record(entry, base, depth + 1)
        if found is None:
            logger.warning("%s: an input's training datasets are unknown", base)
            return None
        names |= found
    return frozenset(names)


def _from_pointer(target: Path, depth: int) -> frozenset[str] | None:
    if depth > _MAX_DEPTH:
        logger.warning("%s: lineage deeper than %d links; training datasets unknown", target, _MAX_DEPTH)
        return None
    if target.is_dir():
        return _from_dir(target, depth + 1)
    if target.is_file():
        return _from_file(target, depth + 1)
    logger.warning("%s: not found; training datasets unknown", target)
    return None


def _entries(value: Any) -> list[Any]:
    """Sub-records: a list of them, one record, or none."""
    if isinstance(value, list):
        return value
    return [value] if value is not None else []


def _names(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [str(key) for key in value]
    if isinstance(value, list):
        return [str(item) for item in value if isinstance(item, str)]
    return []
