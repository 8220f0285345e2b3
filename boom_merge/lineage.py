"""Provenance: the one owner of ``boom_member.json`` and ``boom_lineage.json``.

What a model is made from is written, read and validated here and nowhere else:

- ``boom_member.json`` (:class:`MemberManifest`): a trained member or update model, its base
  (as given, plus the Hub id and commit it derives from), seed, sample ratio, datasets with
  their sizes, training arguments. Training builds the dict (``training/manifest.py``);
- ``boom_lineage.json`` (:class:`Lineage`): a merge or incremental update, its inputs with
  roles, weights, training datasets and Hub ids, and a copy of each input's member manifest
  under ``boom_members/``, so the model stays self-describing after its members are deleted.

Questions about a model are answered from these files: :func:`training_datasets` (in-domain
tagging), :func:`hub_bases` (``base_model`` of a card), :func:`model_sha256` (the one
model hash). A corrupt file is a one-line :class:`BoomError` naming it; a missing one means
"unknown". Files written before ``format_version`` existed are read as version 1.
This module may not import the merge pipeline, training, evaluation or the card.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from boom_merge.errors import BoomError

logger = logging.getLogger(__name__)

LINEAGE_FILE = "boom_lineage.json"
MEMBER_FILE = "boom_member.json"
MEMBERS_DIR = "boom_members"
FORMAT_VERSION = 1
# (is incremental, is base) -> role
_ROLES = {False: {False: "member", True: "base"}, True: {False: "update", True: "old"}}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_MAX_DEPTH = 16


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

    def generations(self) -> list[Lineage]:
        """This lineage, then the old model's, and so on back to the first model."""
        chain, current = [], self
        while current is not None and len(chain) < _MAX_DEPTH:
            chain.append(current)
            current = current.previous
        return chain


def read_lineage(model_dir: str | Path) -> Lineage | None:
    """The lineage of a model dir; None if it has none."""
    file = Path(model_dir) / LINEAGE_FILE
    return Lineage.from_dict(read_record(file), file) if file.is_file() else None


def _per_model_weight(config: Any, ref: Any) -> float | None:
    for entry in config.models or []:
        if entry.model == ref and isinstance((entry.parameters or {}).get("weight"), (int, float)):
            return float(entry.parameters["weight"])
    return None


def _unique_name(path: Path, taken: set[str]) -> str:
    name, i = path.name or "model", 1
    while name in taken:
        i += 1
        name = f"{path.name}-{i}"
    taken.add(name)
    return name


def _identity(spec: str) -> tuple[str, str | None, str | None]:
    """``(path, hub id, commit)`` of a merge input: a local dir (maybe a cache snapshot) or a Hub id."""
    from boom_merge.models import resolve_model

    if not Path(spec).is_dir() and not _HUB_ID.match(spec.partition("@")[0]):
        return spec, None, None
    try:
        resolved = resolve_model(spec)
    except BoomError:  # a Hub input mergekit read but the cache no longer resolves: keep the id
        return spec, spec.partition("@")[0], None
    return str(resolved.path), resolved.hub_id, resolved.revision


def input_record(spec: str, role: str, out_dir: Path, name: str) -> dict[str, Any]:
    """One input: its path, role, Hub identity, and what it was trained on when that is known."""
    path, hub_id, revision = _identity(spec)
    record: dict[str, Any] = {"path": hub_id or path, "role": role}  # a Hub model by its id, not its cache path
    if hub_id:
        record |= {"hub_id": hub_id, "revision": revision}
    model = Path(path)
    if (model / MEMBER_FILE).is_file():
        read_member_manifest(model)  # validate before copying
        (out_dir / MEMBERS_DIR).mkdir(exist_ok=True)
        shutil.copy2(model / MEMBER_FILE, out_dir / MEMBERS_DIR / f"{name}.json")
        record["manifest"] = f"{MEMBERS_DIR}/{name}.json"
    datasets = training_datasets(model) if model.is_dir() else None
    if datasets is not None:
        record["datasets"] = sorted(datasets)
    elif role == "base" and _pretrained(model):
        record["datasets"] = []  # a pretrained base saw none of our training datasets
    if not hub_id and model.is_dir():
        record["hub_bases"] = hub_bases(model)
    return record


def _pretrained(model: Path) -> bool:
    """Neither trained nor merged by boom-merge (a Hub model, or a copy of one)."""
    if not model.is_dir():
        return True
    lineage = read_lineage(model)
    return read_member_manifest(model) is None and (lineage is None or lineage.kind == "copy")


def incremental_lineage(old: Path, update: Path, *, update_weight: float, interpolation: str) -> dict[str, Any]:
    """The start of an incremental update's lineage: both models' hashes and the old lineage."""
    lineage: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "kind": "incremental",
        "old": {"path": str(old), "sha256": model_sha256(old)},
        "update": {"path": str(update), "sha256": model_sha256(update)},
        "update_weight": update_weight,
        "interpolation": interpolation,
        "created": now(),
    }
    previous = read_lineage(old)
    if previous is not None:
        lineage["old_lineage"] = previous.data
    return lineage


def write_lineage(out_dir: str | Path, config: Any, refs: list[Any]) -> dict[str, Any]:
    """Write (or complete, if the caller already started it) ``boom_lineage.json``.

    ``refs`` are mergekit ``ModelReference`` s in the merge's order; ``config`` its
    ``MergeConfiguration``.
    """
    out_dir = Path(out_dir)
    file = out_dir / LINEAGE_FILE
    lineage = read_record(file) if file.is_file() else {}
    lineage.setdefault("format_version", FORMAT_VERSION)
    lineage.setdefault("kind", "merge")
    lineage.setdefault("method", config.merge_method)
    lineage.setdefault("created", now())
    taken: set[str] = set()
    inputs = []
    for ref in refs:
        spec = str(ref.model.path) + (f"@{ref.model.revision}" if getattr(ref.model, "revision", None) else "")
        role = _ROLES[config.merge_method == "boom_incremental"][ref == config.base_model]
        record = input_record(spec, role, out_dir, _unique_name(Path(ref.model.path), taken))
        weight = _per_model_weight(config, ref)
        if weight is not None:
            record["weight"] = weight
        inputs.append(record)
    lineage["inputs"] = inputs
    Lineage.from_dict(lineage, file)
    file.write_text(json.dumps(lineage, indent=2) + "\n", encoding="utf-8")
    return lineage


def write_source(model_dir: str | Path, *, hub_id: str, revision: str | None = None, source: str | None = None) -> Path:
    """Record that ``model_dir`` is a copy (e.g. a re-save) of the Hub model ``hub_id``."""
    file = Path(model_dir) / LINEAGE_FILE
    record = {"format_version": FORMAT_VERSION, "kind": "copy", "created": now(),
              "source": {"hub_id": hub_id, "revision": revision, "path": source}}  # fmt: skip
    file.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return file


# --- questions ------------------------------------------------------------------------


def training_datasets(model_dir: str | Path) -> frozenset[str] | None:
    """The names of the datasets a model was trained on, or None when unknown.

    A member's come from its manifest; a merge's from each input: the datasets recorded
    with it, else its copied manifest, else the input model itself if it still exists.
    One unknown input makes the whole model unknown (then no task is called in-domain
    silently). A copy of a Hub model knows nothing of its training data.
    """
    return _datasets_of(Path(model_dir), 0)


def _datasets_of(model_dir: Path, depth: int) -> frozenset[str] | None:
    if depth > _MAX_DEPTH:
        logger.warning("%s: lineage deeper than %d links; training datasets unknown", model_dir, _MAX_DEPTH)
        return None
    manifest, lineage = read_member_manifest(model_dir), read_lineage(model_dir)
    if manifest is None and (lineage is None or lineage.kind == "copy"):
        return None
    names = set(manifest.dataset_names()) if manifest else set()
    for record in lineage.inputs if lineage else ():
        found = _input_datasets(record, model_dir, depth)
        if found is None:
            logger.warning("%s: the training datasets of input %s are unknown", model_dir, record.path)
            return None
        names |= found
    return frozenset(names)


def _input_datasets(record: InputRecord, model_dir: Path, depth: int) -> frozenset[str] | None:
    if record.datasets is not None:
        return frozenset(record.datasets)
    if record.manifest:
        copy = read_member_manifest(model_dir / record.manifest)
        if copy is not None:
            return copy.dataset_names()
    if record.path and (model_dir / record.path).is_dir():
        return _datasets_of(model_dir / record.path, depth + 1)
    return None


def hub_bases(model_dir: str | Path) -> list[str]:
    """The Hub ids a model derives from, nearest first, in the merge's order; [] when none is known.

    A Hub model (a cache snapshot) is itself; a member: its base's id (recorded, or its
    base's own bases); a merge: each input's id, or for a local input its bases; a copy of a
    Hub model (a re-save): that model.
    """
    return _unique(_bases_of(Path(model_dir), 0))


def _bases_of(model_dir: Path, depth: int) -> list[str]:
    if depth > _MAX_DEPTH:
        return []
    manifest, lineage = read_member_manifest(model_dir), read_lineage(model_dir)
    if manifest is not None:
        return [manifest.base_model_id] if manifest.base_model_id else _spec_bases(manifest.base_model, depth)
    if lineage is not None and lineage.kind == "copy":
        return [str(lineage.data["source"]["hub_id"])] if (lineage.data.get("source") or {}).get("hub_id") else []
    if lineage is not None:
        found = []
        for record in lineage.inputs:
            found += _record_bases(record, model_dir, depth)
        return found
    from boom_merge.models import resolve_model

    hub_id = resolve_model(model_dir).hub_id
    return [hub_id] if hub_id else []


def _record_bases(record: InputRecord, model_dir: Path, depth: int) -> list[str]:
    if record.hub_id:
        return [record.hub_id]
    if record.hub_bases is not None:
        return list(record.hub_bases)
    if record.manifest:
        copy = read_member_manifest(model_dir / record.manifest)
        if copy is not None:
            return [copy.base_model_id] if copy.base_model_id else _spec_bases(copy.base_model, depth)
    return _spec_bases(record.path, depth)


def _spec_bases(spec: str | None, depth: int) -> list[str]:
    """Bases of a model named in a record: a dir that still exists, or a Hub id as written."""
    if not spec:
        return []
    if Path(spec).is_dir():
        return _bases_of(Path(spec), depth + 1)
    repo = spec.partition("@")[0]
    return [repo] if _HUB_ID.match(repo) and not Path(spec).is_absolute() else []


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def model_sha256(model: str | Path) -> str:
    """The model hash: sha256 over the relative paths and contents of its (non-hidden) files.

    A Hub id is resolved first (:func:`boom_merge.models.resolve_model`).
    """
    from tqdm.auto import tqdm

    from boom_merge.models import resolve_model

    path = resolve_model(model).path
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    for file in tqdm(files, desc=f"hashing {path.name}", leave=False, unit="file"):
        digest.update(f"{file.relative_to(path).as_posix()}\n".encode())
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 24), b""):
                digest.update(chunk)
    return digest.hexdigest()
