"""The provenance records, typed: ``boom_member.json`` and ``boom_lineage.json`` read and validated.

Owns: the file names, the typed records, their validation, and writing ``boom_member.json``. It
may not import anything of boom-merge but :mod:`boom_merge.errors`.

A corrupt file (not JSON, not an object, a field of the wrong type, an unknown
``format_version``) is a one-line :class:`BoomError` naming it; an absent one is None.
Files written before ``format_version`` existed are read as version 1. Writing the
lineage of a merge is :mod:`.writing`'s; answering questions about a model :mod:`.questions`'.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from boom_merge.errors import BoomError

LINEAGE_FILE = "boom_lineage.json"
MEMBER_FILE = "boom_member.json"
MEMBERS_DIR = "boom_members"
FORMAT_VERSION = 1
MAX_DEPTH = 16  # links followed through lineage before giving up
SOURCE_KINDS = ("copy", "base")
"""Lineage kinds of a model made from one other model without training: a re-saved copy of it, or an
embedding base built from it (``boom-merge base``); their ``source`` names that model."""


def now() -> str:
    """The timestamp format of every provenance record (UTC, seconds)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def location(path: str | Path) -> str:
    """An existing local path made absolute (records outlive the working directory); else as given."""
    return str(Path(path).resolve()) if Path(path).exists() else str(path)


def read_record(file: Path) -> dict[str, Any]:
    """A provenance JSON object; anything else is one line naming the file."""
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BoomError(f"corrupt provenance file ({error})", path=file) from None
    if not isinstance(data, dict):
        raise BoomError("corrupt provenance file (not a JSON object)", path=file)
    version = data.get("format_version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise BoomError(f"format_version {version!r} is not supported (this boom-merge reads {FORMAT_VERSION})", path=file)
    return data


def _corrupt(file: Path, problem: str) -> BoomError:
    return BoomError(f"corrupt provenance file ({problem})", path=file)


def _optional(data: Mapping[str, Any], key: str, types: type | tuple[type, ...], file: Path) -> Any:
    value = data.get(key)
    allowed = types if isinstance(types, tuple) else (types,)
    if value is not None and (not isinstance(value, allowed) or isinstance(value, bool) and bool not in allowed):
        raise _corrupt(file, f"{key!r} must be {getattr(types, '__name__', types)}, got {value!r}")
    return value


def _datasets(value: Any, file: Path, key: str = "datasets") -> dict[str, dict[str, Any]]:
    """``{name: entry}`` from an object (or, in hand-written files, a list of names)."""
    if value is None:
        return {}
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return {item: {} for item in value}
    if isinstance(value, dict):
        return {str(name): entry if isinstance(entry, dict) else {} for name, entry in value.items()}
    raise _corrupt(file, f"{key!r} must be an object of datasets, got {type(value).__name__}")


# --- member manifests ---------------------------------------------------------------


@dataclass(frozen=True)
class MemberManifest:
    """``boom_member.json``: one trained member (``kind="member"``) or update model."""

    file: Path
    kind: str
    base_model: str | None
    base_model_id: str | None
    base_model_revision: str | None
    seed: int | None
    sample_ratio: float | None
    member_index: int | None
    datasets: dict[str, dict[str, Any]]
    training_args: dict[str, Any]
    data: dict[str, Any] = field(repr=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any], file: Path) -> MemberManifest:
        ratio = _optional(data, "sample_ratio", (int, float), file)
        if ratio is not None and not 0 < ratio <= 1:
            raise _corrupt(file, f"sample_ratio must be in (0, 1], got {ratio!r}")
        for part in ("new_data", "history"):
            if part in data and not isinstance(data[part], dict):
                raise _corrupt(file, f"{part!r} must be an object")
        return cls(
            file=file,
            kind=_optional(data, "kind", str, file) or "member",
            base_model=_optional(data, "base_model", str, file),
            base_model_id=_optional(data, "base_model_id", str, file),
            base_model_revision=_optional(data, "base_model_revision", str, file),
            seed=_optional(data, "seed", int, file),
            sample_ratio=None if ratio is None else float(ratio),
            member_index=_optional(data, "member_index", int, file),
            datasets=_datasets(data.get("datasets"), file),
            training_args=_optional(data, "training_args", dict, file) or {},
            data=data,
        )

    def parts(self) -> dict[str, dict[str, Any]]:
        """An update model's ``new_data`` and ``history`` records (empty for members)."""
        return {key: self.data[key] for key in ("new_data", "history") if isinstance(self.data.get(key), dict)}

    def dataset_names(self) -> frozenset[str]:
        """The datasets it was trained on (an update model: those of its new data and history)."""
        parts = self.parts()
        if parts:
            return frozenset(n for key, p in parts.items() for n in _datasets(p.get("datasets"), self.file, key))
        return frozenset(self.datasets)

    def data_dirs(self) -> list[str]:
        """The training data folders it records (``data``; an update's new data and history)."""
        folders = [self.data.get("data"), *(p.get("path") for p in self.parts().values())]
        return [str(folder) for folder in folders if isinstance(folder, str) and folder]


def read_member_manifest(path: str | Path) -> MemberManifest | None:
    """The manifest of a model dir (or a manifest file such as ``boom_members/m0.json``); None if absent."""
    file = Path(path)
    if file.is_dir():
        file = file / MEMBER_FILE
    return MemberManifest.from_dict(read_record(file), file) if file.is_file() else None


def write_member_manifest(model_dir: str | Path, manifest: Mapping[str, Any]) -> Path:
    """Validate and write ``model_dir/boom_member.json``."""
    file = Path(model_dir) / MEMBER_FILE
    data = {"format_version": FORMAT_VERSION, **manifest}
    MemberManifest.from_dict(json.loads(json.dumps(data)), file)
    file.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return file


def copied_manifests(model_dir: str | Path) -> list[tuple[str, MemberManifest]]:
    """``(name, manifest)``: the model's own, then the copies under ``boom_members/`` (sorted).

    ``boom_members/NAME.json`` and ``boom_members/NAME/boom_member.json`` are both read.
    """
    model_dir = Path(model_dir)
    found = []
    own = read_member_manifest(model_dir)
    if own is not None:
        found.append((model_dir.resolve().name, own))
    copies = model_dir / MEMBERS_DIR
    for file in sorted(copies.rglob("*.json")) if copies.is_dir() else []:
        name = file.parent.name if file.name == MEMBER_FILE else file.stem
        found.append((name, MemberManifest.from_dict(read_record(file), file)))
    return found


# --- lineage --------------------------------------------------------------------------


@dataclass(frozen=True)
class InputRecord:
    """One input of a merge as ``boom_lineage.json`` records it."""

    path: str | None
    role: str
    weight: float | None = None
    manifest: str | None = None
    datasets: tuple[str, ...] | None = None
    hub_id: str | None = None
    revision: str | None = None
    hub_bases: tuple[str, ...] | None = None

    @classmethod
    def from_value(cls, value: Any, file: Path) -> InputRecord:
        if isinstance(value, str):  # hand-written: a path
            return cls(path=value, role="input")
        if not isinstance(value, dict):
            raise _corrupt(file, f"an input must be an object, got {value!r}")
        datasets = value.get("datasets")
        bases = _optional(value, "hub_bases", list, file)
        return cls(
            path=_optional(value, "path", str, file) or _optional(value, "model", str, file),
            role=_optional(value, "role", str, file) or "input",
            weight=_optional(value, "weight", (int, float), file),
            manifest=_optional(value, "manifest", str, file),
            datasets=None if datasets is None else tuple(sorted(_datasets(datasets, file))),
            hub_id=_optional(value, "hub_id", str, file),
            revision=_optional(value, "revision", str, file),
            hub_bases=None if bases is None else tuple(str(b) for b in bases),
        )


@dataclass(frozen=True)
class Lineage:
    """``boom_lineage.json``: a merge, an incremental update (with the old model's lineage)."""

    file: Path
    kind: str
    method: str | None
    created: str | None
    inputs: tuple[InputRecord, ...]
    previous: Lineage | None
    data: dict[str, Any] = field(repr=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any], file: Path) -> Lineage:
        inputs = _optional(data, "inputs", list, file) or []
        old = _optional(data, "old_lineage", dict, file)
        for key in ("old", "update", "source"):
            _optional(data, key, dict, file)
        return cls(
            file=file,
            kind=_optional(data, "kind", str, file) or "merge",
            method=_optional(data, "method", str, file),
            created=_optional(data, "created", str, file),
            inputs=tuple(InputRecord.from_value(value, file) for value in inputs),
            previous=None if old is None else cls.from_dict(old, file),
            data=data,
        )

    @property
    def source(self) -> dict[str, Any] | None:
        """The one model a copy or an embedding base is made from (``hub_id``, ``revision``, ``path``); else None."""
        return (self.data.get("source") or {}) if self.kind in SOURCE_KINDS else None

    def generations(self) -> list[Lineage]:
        """This lineage, then the old model's, and so on back to the first model."""
        chain, current = [], self
        while current is not None and len(chain) < MAX_DEPTH:
            chain.append(current)
            current = current.previous
        return chain


def read_lineage(model_dir: str | Path) -> Lineage | None:
    """The lineage of a model dir; None if it has none."""
    file = Path(model_dir) / LINEAGE_FILE
    return Lineage.from_dict(read_record(file), file) if file.is_file() else None
