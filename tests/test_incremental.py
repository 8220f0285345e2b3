"""`boom-merge incremental`: never touches OLD, exact at the ends, records lineage."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from safetensors.torch import load_file
from sentence_transformers import SentenceTransformer

from boom_merge.cli import main
from boom_merge.lineage import LINEAGE_FILE, model_sha256
from tests.reference_merges import hand_merged_embeddings, np_multislerp

TEXTS = ["new domain text", "old domain text"]


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.rglob("*")}


def _incremental(old, update, out, *extra) -> None:
    result = CliRunner().invoke(main, ["incremental", str(old), str(update), "-o", str(out), *map(str, extra)])
    assert result.exit_code == 0, result.output


def test_alpha_zero_and_one_are_exact_and_old_is_untouched(tmp_path, tiny_bag) -> None:
    _, (old, update, *_) = tiny_bag
    before = _snapshot(old)
    digest = model_sha256(old)
    _incremental(old, update, tmp_path / "zero", "--update-weight", 0)
    _incremental(old, update, tmp_path / "one", "--update-weight", 1)
    for out, source in ((tmp_path / "zero", old), (tmp_path / "one", update)):
        merged, expected = load_file(str(out / "model.safetensors")), load_file(str(source / "model.safetensors"))
        assert merged.keys() == expected.keys()
        assert all(np.array_equal(merged[k].numpy(), expected[k].numpy()) for k in merged)
        dense = load_file(str(out / "2_Dense/model.safetensors"))
        assert all(np.array_equal(v.numpy(), load_file(str(source / "2_Dense/model.safetensors"))[k].numpy())
                   for k, v in dense.items())
    assert _snapshot(old) == before and model_sha256(old) == digest


@pytest.mark.parametrize("interpolation", ["slerp", "linear"])
def test_default_update_embeds_like_hand_merge_and_records_lineage(tmp_path, tiny_bag, interpolation) -> None:
    _, (old, update, *_) = tiny_bag
    out = tmp_path / "new"
    _incremental(old, update, out, "--update-weight", 0.3, "--interpolation", interpolation)
    if interpolation == "slerp":
        fn = lambda a: np_multislerp([a[1], a[0]], [0.7, 0.3])  # noqa: E731
    else:
        fn = lambda a: 0.3 * a[0] + 0.7 * a[1]  # noqa: E731
    expected = hand_merged_embeddings([update, old], fn, TEXTS)
    assert np.abs(SentenceTransformer(str(out), device="cpu").encode(TEXTS) - expected).max() <= 1e-5
    lineage = json.loads((out / LINEAGE_FILE).read_text())
    assert lineage["kind"] == "incremental"
    assert lineage["update_weight"] == 0.3 and lineage["interpolation"] == interpolation
    assert lineage["old"] == {"path": str(old.absolute()), "sha256": model_sha256(old)}
    assert lineage["update"]["sha256"] == model_sha256(update)


def test_lineage_chains_across_updates(tmp_path, tiny_bag) -> None:
    _, (old, u1, u2, _) = tiny_bag
    _incremental(old, u1, tmp_path / "v2")
    _incremental(tmp_path / "v2", u2, tmp_path / "v3")
    lineage = json.loads((tmp_path / "v3" / LINEAGE_FILE).read_text())
    assert lineage["old"]["path"] == str(tmp_path / "v2")
    assert lineage["old_lineage"]["update"]["path"] == str(u1.absolute())


def test_refuses_to_write_into_old_or_over_existing(tmp_path, tiny_bag) -> None:
    _, (old, update, *_) = tiny_bag
    before = _snapshot(old)
    inside = CliRunner().invoke(main, ["incremental", str(old), str(update), "-o", str(old / "new")])
    assert inside.exit_code != 0 and "inside the input" in inside.output
    same = CliRunner().invoke(main, ["incremental", str(old), str(update), "-o", str(old), "--force"])
    assert same.exit_code != 0
    out = tmp_path / "exists"
    out.mkdir()
    refused = CliRunner().invoke(main, ["incremental", str(old), str(update), "-o", str(out)])
    assert refused.exit_code != 0 and "--force" in refused.output
    assert _snapshot(old) == before
    assert not any(name.startswith(".") for name in os.listdir(tmp_path))
