"""Merged models describe their inputs, so eval can tag in-domain tasks after members are gone."""

from __future__ import annotations

import json
import shutil

import yaml

from boom_merge.lineage import training_datasets
from boom_merge.incremental import incremental_merge
from boom_merge.merging import merge_recipe


def _member(src, dst, datasets: list[str], ratio: float):
    shutil.copytree(src, dst)
    manifest = {"kind": "member", "sample_ratio": ratio, "seed": 1,
                "datasets": {d: {"available": 10, "sampled": 4, "ids_sha256": "0" * 64} for d in datasets}}
    (dst / "boom_member.json").write_text(json.dumps(manifest))
    return dst


def test_merge_lineage_survives_deleting_members(tmp_path, tiny_bag) -> None:
    base, members = tiny_bag
    a = _member(members[0], tmp_path / "a", ["wordnet", "foldoc"], 0.4)
    b = _member(members[1], tmp_path / "b", ["wordnet", "manpages"], 1.0)
    recipe = tmp_path / "r.yml"
    recipe.write_text(yaml.safe_dump({"merge_method": "boom", "base_model": str(base), "models": [
        {"model": str(a), "parameters": {"weight": 0.4}}, {"model": str(b), "parameters": {"weight": 1.0}}]}))
    out = merge_recipe(recipe, tmp_path / "merged")
    lineage = json.loads((out / "boom_lineage.json").read_text())
    assert lineage["kind"] == "merge" and lineage["method"] == "boom"
    assert [(r["role"], r.get("weight")) for r in lineage["inputs"]] == [("member", 0.4), ("member", 1.0), ("base", None)]
    assert json.loads((out / "boom_members/a.json").read_text())["sample_ratio"] == 0.4
    shutil.rmtree(a)
    shutil.rmtree(b)
    assert training_datasets(out) == {"wordnet", "foldoc", "manpages"}

    update = _member(members[2], tmp_path / "u", ["python_code"], 1.0)
    new = incremental_merge(out, update, tmp_path / "new").path
    assert training_datasets(new) == {"wordnet", "foldoc", "manpages", "python_code"}
    lineage = json.loads((new / "boom_lineage.json").read_text())
    assert lineage["kind"] == "incremental" and [r["role"] for r in lineage["inputs"]] == ["update", "old"]
