"""Writing provenance: the lineage of a merge or an incremental update, and of a model made from one other.

Owns: writing ``boom_lineage.json`` and the copies under ``boom_members/`` (not ``boom_member.json``:
:mod:`.records`), and the one record of a model by its path or Hub id with its hash (:func:`model_record`).
What it records of an input (datasets, Hub bases, hash) it asks :mod:`.questions`; it may import nothing
of boom-merge but :mod:`.records`, :mod:`.questions`, ``errors`` and ``model_refs``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from boom_merge.errors import BoomError
from boom_merge.lineage.model_hash import model_sha256
from boom_merge.lineage.questions import hub_bases, hub_repo, training_datasets
from boom_merge.lineage.records import (FORMAT_VERSION, LINEAGE_FILE, MEMBER_FILE, MEMBERS_DIR, SOURCE_KINDS, Lineage,
                                        location, now, read_lineage, read_member_manifest, read_record)

# (is incremental, is base) -> role
_ROLES = {False: {False: "member", True: "base"}, True: {False: "update", True: "old"}}


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

    if not Path(spec).is_dir() and hub_repo(spec) is None:
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


def model_record(
    path: Path, hub: tuple[str, str | None] | None = None, *, sha256: str | None = None
) -> dict[str, Any]:
    """A model by its local path and hash; a Hub model by its id and commit (not its cache path).

    ``hub``: a Hub model's ``(id, commit)``; ``sha256``: the hash of ``path`` when already computed.
    """
    digest = sha256 or model_sha256(path)
    if hub is None:
        return {"path": str(path), "sha256": digest}
    return {"path": hub[0], "sha256": digest, "hub_id": hub[0], "revision": hub[1]}


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
        "old": model_record(old, old_hub),
        "update": model_record(update, update_hub),
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
