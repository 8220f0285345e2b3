"""Provenance: merged models describe their inputs (so eval can tag in-domain tasks after the
members are gone), records answer "which datasets / which Hub base", bad files are one line."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml

from boom_merge.errors import BoomError
from boom_merge.incremental.update import incremental_merge
from boom_merge.lineage import (
    hub_bases,
    model_sha256,
    read_lineage,
    read_member_manifest,
    training_datasets,
    write_member_manifest,
    write_source,
)
from boom_merge.merge.pipeline import merge_recipe

HUB_ID = "someorg/tiny-base"
REV = "0123456789abcdef0123456789abcdef01234567"


def _member(src, dst, datasets: list[str], ratio: float):
    shutil.copytree(src, dst)
    manifest = {"kind": "member", "sample_ratio": ratio, "seed": 1,
                "datasets": {d: {"available": 10, "sampled": 4, "ids_sha256": "0" * 64} for d in datasets}}
    (dst / "boom_member.json").write_text(json.dumps(manifest))
    return dst


def test_merge_lineage_survives_deleting_members(tmp_path, tiny_bag) -> None:
    base = shutil.copytree(tiny_bag[0], tmp_path / "base")
    write_source(base, hub_id="org/base", revision=REV)  # a re-saved Hub model
    members = tiny_bag[1]
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
    assert lineage["format_version"] == 1 and lineage["inputs"][-1]["datasets"] == []  # a pretrained base
    assert hub_bases(out) == ["org/base"]
    shutil.rmtree(a)
    shutil.rmtree(b)
    assert training_datasets(out) == {"wordnet", "foldoc", "manpages"}

    update = _member(members[2], tmp_path / "u", ["python_code"], 1.0)
    new = incremental_merge(out, update, tmp_path / "new").path
    assert training_datasets(new) == {"wordnet", "foldoc", "manpages", "python_code"}
    lineage = json.loads((new / "boom_lineage.json").read_text())
    assert lineage["kind"] == "incremental" and [r["role"] for r in lineage["inputs"]] == ["update", "old"]


# --- records, questions and bad files (no merges) -------------------------------------



def _hf_cache(root: Path, model: Path) -> Path:
    """``model`` placed in a Hugging Face cache as ``hf download`` leaves it; returns the snapshot."""
    repo = root / "hub" / f"models--{HUB_ID.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REV)
    shutil.copytree(model, repo / "snapshots" / REV)
    return repo / "snapshots" / REV


def _dir(path: Path, files: dict[str, object]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name, record in files.items():
        (path / name).write_text(record if isinstance(record, str) else json.dumps(record))
    return path


def test_hub_bases_of_members_merges_and_copies(tmp_path, tiny_bert_base, monkeypatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    snapshot = _hf_cache(tmp_path, tiny_bert_base)
    from boom_merge.training.manifest import base_record

    by_id, by_path = base_record(HUB_ID), base_record(str(snapshot))
    for record in (by_id, by_path):  # the id and the commit, never the cache path
        assert (record["base_model"], record["base_model_id"], record["base_model_revision"]) == (HUB_ID, HUB_ID, REV)
    assert by_id["base_model_sha256"] == model_sha256(snapshot) == model_sha256(HUB_ID)
    plain = base_record(str(tiny_bert_base))
    assert plain["base_model"] == str(tiny_bert_base.resolve()) and plain["base_model_id"] is None

    member = _dir(tmp_path / "m0", {"boom_member.json": {"kind": "member", **by_id}})
    old_style = _dir(tmp_path / "m1", {"boom_member.json": {"kind": "member", "base_model": str(snapshot)}})
    local = _dir(tmp_path / "m2", {"boom_member.json": {"kind": "member", "base_model": str(tiny_bert_base)}})
    assert hub_bases(member) == hub_bases(old_style) == hub_bases(snapshot) == [HUB_ID]
    assert hub_bases(local) == [] and hub_bases(tiny_bert_base) == []

    from boom_merge.embedded_default import resave_model

    resaved = resave_model(HUB_ID, tmp_path / "resaved")  # as the quickstart re-saves its base
    assert read_lineage(resaved).data["source"] == {"hub_id": HUB_ID, "revision": REV, "path": HUB_ID}
    assert hub_bases(resaved) == [HUB_ID] and base_record(str(resaved))["base_model_id"] == HUB_ID
    from_resaved = _dir(tmp_path / "m3", {"boom_member.json": {"kind": "member", "base_model": str(resaved)}})
    assert hub_bases(from_resaved) == [HUB_ID]

    inputs = [{"path": "/gone/m0", "role": "member", "manifest": "boom_members/m0.json"},
              {"path": "/gone/x", "role": "member", "hub_id": "other/model", "revision": REV},
              {"path": str(resaved), "role": "base"}]
    merged = _dir(tmp_path / "merged", {"boom_lineage.json": {"kind": "merge", "inputs": inputs}})
    _dir(merged / "boom_members", {"m0.json": {"kind": "member", "base_model_id": HUB_ID}})
    assert hub_bases(merged) == [HUB_ID, "other/model"]  # the merge's order, each id once


def test_model_sha256_is_the_files_hash(tiny_bert_base) -> None:
    digest = hashlib.sha256()
    for file in sorted(p for p in tiny_bert_base.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(tiny_bert_base).as_posix()}\n".encode() + file.read_bytes())
    assert model_sha256(tiny_bert_base) == digest.hexdigest()


def test_manifest_record_round_trip(tmp_path) -> None:
    data = {"kind": "update", "base_model": "org/base", "seed": 7, "sample_ratio": 1.0,
            "new_data": {"path": "/d/new", "datasets": {"kjv": {"sampled": 3}}},
            "history": {"path": "/d/old", "datasets": {"foldoc": {"sampled": 1}}},
            "datasets": {"new/kjv": {"sampled": 3}, "history/foldoc": {"sampled": 1}}}
    write_member_manifest(tmp_path, data)
    manifest = read_member_manifest(tmp_path)
    assert (manifest.kind, manifest.seed, manifest.base_model) == ("update", 7, "org/base")
    assert manifest.dataset_names() == {"kjv", "foldoc"} and manifest.data_dirs() == ["/d/new", "/d/old"]
    assert json.loads((tmp_path / "boom_member.json").read_text())["format_version"] == 1
    assert read_member_manifest(tmp_path / "nothing-here") is None and read_lineage(tmp_path) is None


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        ("boom_member.json", "{not json", "corrupt provenance file (Expecting property name"),
        ("boom_member.json", "[1, 2]", "corrupt provenance file (not a JSON object)"),
        ("boom_member.json", '{"sample_ratio": 3}', "sample_ratio must be in (0, 1]"),
        ("boom_member.json", '{"seed": "x"}', "'seed' must be int"),
        ("boom_member.json", '{"format_version": 2}', "format_version 2 is not supported"),
        ("boom_lineage.json", '{"inputs": {"a": 1}}', "'inputs' must be list"),
        ("boom_lineage.json", '{"inputs": [3]}', "an input must be an object"),
        ("boom_lineage.json", "", "corrupt provenance file (Expecting value"),
    ],
)
def test_corrupt_file_is_one_line_naming_it(tmp_path, name, text, problem) -> None:
    (tmp_path / name).write_text(text)
    for question in (training_datasets, hub_bases, read_member_manifest if name == "boom_member.json" else read_lineage):
        with pytest.raises(BoomError) as error:
            question(tmp_path)
        message = str(error.value)
        assert message.startswith(f"{tmp_path / name}: ") and problem in message and "\n" not in message


def test_one_walker_with_one_depth_limit(tmp_path, monkeypatch) -> None:
    """The card's licence look-up and ``hub_bases`` walk through ``lineage.questions.walk`` and stop at its ``MAX_DEPTH``."""
    from boom_merge.card.build import model_licence
    from boom_merge.lineage import questions

    chain = [_dir(tmp_path / "m0", {"boom_member.json": {"kind": "member", "base_model_id": HUB_ID},
                                    "README.md": "---\nlicense: mit\n---\n# m0\n"})]
    for i in range(1, 6):  # each member trained from the one before it
        chain.append(_dir(tmp_path / f"m{i}", {"boom_member.json": {"kind": "member", "base_model": str(chain[-1])}}))
    monkeypatch.setattr(questions, "MAX_DEPTH", 3)
    assert [hub_bases(m) for m in chain] == [[HUB_ID]] * 4 + [[], []]  # m4 is 4 links from m0
    assert [model_licence(m) for m in chain[1:]] == ["mit"] * 4 + [None]  # m0's README is read from m1's record
