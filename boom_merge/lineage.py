"""Provenance of merged models: which inputs, with which weights, trained on what.

Every merge whose inputs are sentence-transformers models gets ``boom_lineage.json``
(whether run by ``boom-merge`` or plain ``mergekit-yaml``), and a copy of each input's
member manifest under ``boom_members/``. The model card, ``boom-merge eval`` (in-domain
vs OOD tagging) and later incremental updates read them, so a merged model stays
self-describing after its members are deleted.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

LINEAGE_FILE = "boom_lineage.json"
MEMBER_FILE = "boom_member.json"
MEMBERS_DIR = "boom_members"
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


def input_record(path: Path, role: str, out_dir: Path, name: str) -> dict[str, Any]:
    """One input: its path and role, plus what it was trained on when that is known."""
    from boom_merge.evaluation.lineage import training_datasets

    record: dict[str, Any] = {"path": str(path.absolute()), "role": role}
    if (path / MEMBER_FILE).is_file():
        (out_dir / MEMBERS_DIR).mkdir(exist_ok=True)
        shutil.copy2(path / MEMBER_FILE, out_dir / MEMBERS_DIR / f"{name}.json")
        record["manifest"] = f"{MEMBERS_DIR}/{name}.json"
    datasets = training_datasets(path) if path.is_dir() else None
    if datasets is not None:
        record["datasets"] = sorted(datasets)
    elif role == "base" and not (path / LINEAGE_FILE).is_file():
        record["datasets"] = []  # a pretrained base saw none of our training datasets
    return record


def write_lineage(out_dir: str | Path, config: Any, refs: list[Any]) -> dict[str, Any]:
    """Write (or complete, if the caller already started it) ``boom_lineage.json``."""
    out_dir = Path(out_dir)
    file = out_dir / LINEAGE_FILE
    lineage = json.loads(file.read_text(encoding="utf-8")) if file.is_file() else {}
    lineage.setdefault("kind", "merge")
    lineage.setdefault("method", config.merge_method)
    lineage.setdefault("created", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    taken: set[str] = set()
    inputs = []
    for ref in refs:
        path = Path(ref.model.path)
        role = _ROLES[config.merge_method == "boom_incremental"][ref == config.base_model]
        record = input_record(path, role, out_dir, _unique_name(path, taken))
        weight = _per_model_weight(config, ref)
        if weight is not None:
            record["weight"] = weight
        inputs.append(record)
    lineage["inputs"] = inputs
    file.write_text(json.dumps(lineage, indent=2) + "\n", encoding="utf-8")
    return lineage
