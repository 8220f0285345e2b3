"""Provenance: the one owner of ``boom_member.json`` and ``boom_lineage.json``.

Owns: writing and reading ``boom_member.json``, ``boom_lineage.json`` and ``boom_members/``, and
the one model hash.

What a model is made from is written, read and validated here and nowhere else:

- ``boom_member.json`` (:class:`MemberManifest`): a trained member or update model, its base
  (as given, plus the Hub id and commit it derives from), seed, sample ratio, datasets with
  their sizes, training arguments. Training builds the dict (``training/manifest.py``);
- ``boom_lineage.json`` (:class:`Lineage`): a merge or incremental update, its inputs with
  roles, weights, training datasets and Hub ids, and a copy of each input's member manifest
  under ``boom_members/``, so the model stays self-describing after its members are deleted;
  or a model made from one other without training (:data:`SOURCE_KINDS`: a re-saved ``copy``, an
  embedding ``base`` from ``boom-merge base``), its ``source`` naming that model.

Questions about a model are answered from these files: :func:`training_datasets` (in-domain
tagging), :func:`full_data_index` (which member is the full-data one), :func:`hub_bases` (``base_model`` of a card), :func:`model_sha256` (the one
model hash). A corrupt file is a one-line :class:`BoomError` naming it; a missing one means
"unknown". The typed records and their validation are in :mod:`.records`; this package writes
lineage and answers questions. It may not import the merge pipeline, training, evaluation or
the card (it uses :mod:`boom_merge.model_refs` to resolve Hub ids).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from boom_merge.errors import BoomError
from boom_merge.lineage.records import (
    FORMAT_VERSION,
    LINEAGE_FILE,
    MAX_DEPTH,
    MEMBER_FILE,
    MEMBERS_DIR,
    SOURCE_KINDS,
    InputRecord,
    Lineage,
    MemberManifest,
    copied_manifests,
    location,
    now,
    read_lineage,
    read_member_manifest,
    read_record,
    write_member_manifest,
)

__all__ = [
    "FORMAT_VERSION", "LINEAGE_FILE", "MEMBERS_DIR", "MEMBER_FILE", "SOURCE_KINDS", "InputRecord", "Lineage", "MemberManifest",
    "copied_manifests", "full_data_index", "hub_bases", "incremental_lineage", "input_record", "location", "model_sha256", "now",
    "read_lineage", "read_member_manifest", "read_record", "training_datasets", "write_lineage",
    "write_member_manifest", "write_source",
]

logger = logging.getLogger(__name__)

# (is incremental, is base) -> role
_ROLES = {False: {False: "member", True: "base"}, True: {False: "update", True: "old"}}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


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
    from boom_merge.model_refs import resolve_model

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
    return read_member_manifest(model) is None and (lineage is None or lineage.source is not None)


def _model_record(path: Path, hub: tuple[str, str | None] | None) -> dict[str, Any]:
    """A model by its local path and hash; a Hub model by its id and commit (not its cache path)."""
    if hub is None:
        return {"path": str(path), "sha256": model_sha256(path)}
    return {"path": hub[0], "sha256": model_sha256(path), "hub_id": hub[0], "revision": hub[1]}


def incremental_lineage(
    old: Path, update: Path, *, update_weight: float, interpolation: str,
    old_hub: tuple[str, str | None] | None = None, update_hub: tuple[str, str | None] | None = None,
) -> dict[str, Any]:
    """The start of an incremental update's lineage: both models' hashes and the old lineage.

    ``old``/``update`` are local dirs (a Hub model's snapshot); ``*_hub`` a Hub model's ``(id, commit)``.
    """
    lineage: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "kind": "incremental",
        "old": _model_record(old, old_hub),
        "update": _model_record(update, update_hub),
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
    from boom_merge.model_refs import reference_spec

    out_dir = Path(out_dir)
    file = out_dir / LINEAGE_FILE
    lineage = read_record(file) if file.is_file() else {}
    lineage.setdefault("format_version", FORMAT_VERSION)
    lineage.setdefault("kind", "merge")
    lineage.setdefault("method", config.merge_method)
    lineage.setdefault("created", now())
    taken: set[str] = set()
    inputs = []
    # an incremental update names its old and update models (add mode merges them over a third, the base)
    named = {location(lineage[key]["path"]): key for key in ("old", "update")
             if lineage.get("kind") == "incremental" and isinstance((lineage.get(key) or {}).get("path"), str)}
    for ref in refs:
        spec = reference_spec(ref.model)
        role = named.get(location(ref.model.path)) or _ROLES[config.merge_method == "boom_incremental"][
            ref == config.base_model]
        record = input_record(spec, role, out_dir, _unique_name(Path(ref.model.path), taken))
        weight = _per_model_weight(config, ref)
        if weight is not None:
            record["weight"] = weight
        inputs.append(record)
    lineage["inputs"] = inputs
    Lineage.from_dict(lineage, file)
    file.write_text(json.dumps(lineage, indent=2) + "\n", encoding="utf-8")
    return lineage


def write_source(
    model_dir: str | Path, *, hub_id: str | None, revision: str | None = None, source: str | None = None,
    kind: str = "copy", name: str | None = None, settings: dict[str, Any] | None = None,
) -> Path:
    """Record that ``model_dir`` is made from one model without training (:data:`SOURCE_KINDS`).

    ``kind="copy"``: a copy (e.g. a re-save) of the Hub model ``hub_id``; ``"base"``: an embedding
    base built from it (``name``: what its card calls it, ``settings``: how it was built).
    """
    if kind not in SOURCE_KINDS:
        raise ValueError(f"kind must be one of {SOURCE_KINDS}, got {kind!r}")
    file = Path(model_dir) / LINEAGE_FILE
    origin = {"hub_id": hub_id, "revision": revision, "path": source} | ({"name": name} if name else {})
    record = {"format_version": FORMAT_VERSION, "kind": kind, "created": now(), "source": origin}
    if settings is not None:
        record["settings"] = settings
    file.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return file


# --- questions ------------------------------------------------------------------------


def full_data_index(samplings: Iterable[tuple[float | None, str | None]]) -> int | None:
    """Index of the first full-data (BLS) member among ``(sample_ratio, mode)`` pairs, None if none.

    The full-data member trains on every row of every dataset: sample ratio 1, drawn without
    replacement (a manifest that records no mode was drawn so: it is the default).
    """
    for index, (ratio, mode) in enumerate(samplings):
        if ratio == 1.0 and mode in (None, "without_replacement"):
            return index
    return None


def training_datasets(model_dir: str | Path) -> frozenset[str] | None:
    """The names of the datasets a model was trained on, or None when unknown.

    A member's come from its manifest; a merge's from each input: the datasets recorded
    with it, else its copied manifest, else the input model itself if it still exists.
    One unknown input makes the whole model unknown (then no task is called in-domain
    silently). A copy of a Hub model knows nothing of its training data.
    """
    return _datasets_of(Path(model_dir), 0)


def _datasets_of(model_dir: Path, depth: int) -> frozenset[str] | None:
    if depth > MAX_DEPTH:
        logger.warning("%s: lineage deeper than %d links; training datasets unknown", model_dir, MAX_DEPTH)
        return None
    manifest, lineage = read_member_manifest(model_dir), read_lineage(model_dir)
    if manifest is None and (lineage is None or lineage.source is not None):
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
    Hub model (a re-save) or an embedding base built from one: that model.
    """
    return _unique(_bases_of(Path(model_dir), 0))


def _bases_of(model_dir: Path, depth: int) -> list[str]:
    if depth > MAX_DEPTH:
        return []
    manifest, lineage = read_member_manifest(model_dir), read_lineage(model_dir)
    if manifest is not None:
        return [manifest.base_model_id] if manifest.base_model_id else _spec_bases(manifest.base_model, depth)
    if lineage is not None and lineage.source is not None:
        return [str(lineage.source["hub_id"])] if lineage.source.get("hub_id") else []
    if lineage is not None:
        found = []
        for record in lineage.inputs:
            found += _record_bases(record, model_dir, depth)
        return found
    from boom_merge.model_refs import resolve_model

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

    A Hub id is resolved first (:func:`boom_merge.model_refs.resolve_model`).
    """
    from tqdm.auto import tqdm

    from boom_merge.model_refs import resolve_model

    resolved = resolve_model(model)
    path = resolved.path
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    for file in tqdm(files, desc=f"hashing {resolved.hub_id or path.name}", leave=False, unit="file"):
        digest.update(f"{file.relative_to(path).as_posix()}\n".encode())
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 24), b""):
                digest.update(chunk)
    return digest.hexdigest()
