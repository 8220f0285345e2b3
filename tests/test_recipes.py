"""Recipes: the shipped ones run with plain mergekit-yaml; `boom-merge recipe` writes runnable ones."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from safetensors.torch import load_file
from sentence_transformers import SentenceTransformer

from boom_merge.cli import main
from boom_merge.merge.pipeline import merge_recipe
from boom_merge.merge.recipe_writing import build_recipe, member_weights
from tests.reference_merges import hand_merged_embeddings, np_linear, np_multislerp, np_ties

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "recipes").glob("*.yml"))
TEXTS = ["The cat sat on the mat.", "A function returns a value.", "query about Unix pipes"]


@pytest.fixture(scope="module")
def quickstart_layout(tmp_path_factory, tiny_bag) -> Path:
    """The directory layout `boom-merge quickstart` writes, filled with tiny models."""
    base, members = tiny_bag
    root = tmp_path_factory.mktemp("repo")
    qs = root / "runs" / "quickstart"
    shutil.copytree(base, qs / "base")
    for i, (member, ratio) in enumerate(zip(members, (40, 60, 80, 100))):
        target = shutil.copytree(member, qs / "members" / f"member-{i}-r{ratio}")
        (target / "boom_member.json").write_text(json.dumps({"sample_ratio": ratio / 100, "kind": "member"}))
    shutil.copytree(members[0], qs / "boom")
    shutil.copytree(members[1], qs / "update")
    return root


def test_all_recipes_are_shipped() -> None:
    assert {p.name for p in SHIPPED} == {"boom.yml", "boom_linear.yml", "multislerp.yml",
                                         "task_arithmetic.yml", "ties.yml", "incremental.yml"}
    for recipe in SHIPPED:
        assert recipe.read_text().startswith("#"), f"{recipe.name} must explain its formula"


_RUN_ALL = """
import sys
from mergekit.scripts.run_yaml import main
for recipe in sys.argv[1:]:
    try:
        main([recipe, f"runs/{recipe.rsplit('/', 1)[-1][:-4]}-out"])
    except SystemExit as exit:
        if exit.code:
            raise
"""


def _expected(stem: str, qs: Path):
    """(inputs, hand merge of their weight arrays) that each shipped recipe computes."""
    members = sorted((qs / "members").iterdir())
    with_base = [*members, qs / "base"]
    return {
        "boom": (members, lambda a: np_multislerp(a, [1, 1, 1, 1])),
        "boom_linear": (members, lambda a: np_linear(a, [0.4, 0.6, 0.8, 1.0])),
        "multislerp": (with_base, lambda a: np_multislerp(a[:-1], [1, 1, 1, 1], base=a[-1])),
        "task_arithmetic": (with_base, lambda a: a[-1] + sum(0.25 * (t - a[-1]) for t in a[:-1])),
        "ties": (with_base, lambda a: np_ties(a[:-1], a[-1], [1, 1, 1, 1], 0.5)),
        "incremental": ([qs / "boom", qs / "update"], lambda a: np_multislerp(a, [0.5, 0.5])),
    }[stem]


@pytest.fixture(scope="module")
def shipped_outputs(quickstart_layout) -> Path:
    """Every shipped recipe run by plain mergekit-yaml (one fresh interpreter with the hook, from the repo root)."""
    env = {k: v for k, v in os.environ.items() if k != "BOOM_MERGE_DISABLE_HOOK"}
    result = subprocess.run([sys.executable, "-c", _RUN_ALL, *map(str, SHIPPED)], cwd=quickstart_layout,
                            capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return quickstart_layout


@pytest.mark.parametrize("recipe", SHIPPED, ids=lambda p: p.stem)
def test_shipped_recipe_runs_with_plain_mergekit_yaml(recipe, shipped_outputs) -> None:
    """...and embeds like the hand merge (numpy, float64) of the formula in its header."""
    out = shipped_outputs / "runs" / f"{recipe.stem}-out"
    assert "dtype" not in yaml.safe_load(recipe.read_text())  # the inputs' dtype is kept
    inputs, merge = _expected(recipe.stem, shipped_outputs / "runs/quickstart")
    expected = hand_merged_embeddings(inputs, merge, TEXTS)
    got = SentenceTransformer(str(out), device="cpu").encode(TEXTS)
    assert np.abs(got - expected).max() <= 1e-5
    assert json.loads((out / "boom_lineage.json").read_text())["method"] == yaml.safe_load(recipe.read_text())["merge_method"]


def test_ratio_weights_come_from_manifests(quickstart_layout) -> None:
    members = sorted((quickstart_layout / "runs/quickstart/members").iterdir())
    assert member_weights(members, "ratio") == pytest.approx([0.4 / 2.8, 0.6 / 2.8, 0.8 / 2.8, 1.0 / 2.8], abs=1e-6)
    assert member_weights(members, "equal") == [0.25] * 4


@pytest.mark.parametrize("method", ["boom", "boom_linear", "linear", "multislerp", "task_arithmetic", "ties"])
def test_cli_recipe_is_runnable(tmp_path, quickstart_layout, method) -> None:
    qs = quickstart_layout / "runs/quickstart"
    members = sorted((qs / "members").iterdir())
    recipe = tmp_path / f"{method}.yml"
    result = CliRunner().invoke(main, ["recipe", *map(str, members), "-o", str(recipe), "--method", method,
                                       "--weights", "ratio", "--base", str(qs / "base")])
    assert result.exit_code == 0, result.output
    out = merge_recipe(recipe, tmp_path / "out")
    assert (out / "modules.json").is_file()
    if method == "boom_linear":  # independent check: ratio-weighted average of the members
        merged = load_file(str(out / "model.safetensors"))
        states = [load_file(str(m / "model.safetensors")) for m in members]
        key = "encoder.layer.1.output.dense.weight"
        expected = sum(r * s[key].double() for r, s in zip((0.4, 0.6, 0.8, 1.0), states)) / 2.8
        np.testing.assert_allclose(merged[key].double().numpy(), expected.numpy(), atol=1e-6)


def test_recipe_errors(tmp_path, quickstart_layout) -> None:
    members = sorted((quickstart_layout / "runs/quickstart/members").iterdir())
    no_base = CliRunner().invoke(main, ["recipe", *map(str, members), "-o", str(tmp_path / "t.yml"), "--method", "ties"])
    assert no_base.exit_code != 0 and "--base" in no_base.output
    (tmp_path / "plain").mkdir()
    no_manifest = CliRunner().invoke(main, ["recipe", str(tmp_path / "plain"), "-o", str(tmp_path / "r.yml"), "--weights", "ratio"])
    assert no_manifest.exit_code != 0 and "boom_member.json" in no_manifest.output
    existing = tmp_path / "exists.yml"
    existing.write_text("keep")
    refused = CliRunner().invoke(main, ["recipe", *map(str, members), "-o", str(existing)])
    assert refused.exit_code != 0 and existing.read_text() == "keep"
    # what `merge` would refuse, or a path that is no model: refused here, one line naming it, nothing written
    out = tmp_path / "bad.yml"
    for given, error in [
        ([members[0], tmp_path / "nope"], f"Error: {tmp_path / 'nope'}: not a local directory, nor a Hub id"),
        ([members[0], "./nope"], "Error: ./nope: not a local directory, nor a Hub id"),
        ([members[0], existing], f"Error: {existing}: not a model directory (a file)"),
        ([members[0], members[1], f"{members[0]}/../{members[0].name}"], f"member given twice (also as {members[0]})"),
        ([*members, "--base", members[0], "--method", "ties"],
         f"the base is also given as a member ({members[0]}); the members are the models trained from it"),
        ([*members, "--base", members[0].parent, "--method", "ties", "--density", "1.5"], "--density must be in (0, 1]"),
    ]:
        result = CliRunner().invoke(main, ["recipe", *map(str, given), "-o", str(out)])
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        assert result.output.splitlines()[-1].startswith("Error:") and error in result.output.splitlines()[-1], \
            result.output
        assert not out.exists()
    hub = CliRunner().invoke(main, ["recipe", str(members[0]), "org/not-downloaded@main", "-o", str(out)])
    assert hub.exit_code == 0, hub.output  # a Hub id by its form: a recipe may name a model not downloaded yet


def test_build_recipe_is_valid_mergekit_config(quickstart_layout) -> None:
    from mergekit.config import MergeConfiguration

    members = sorted((quickstart_layout / "runs/quickstart/members").iterdir())
    recipe = build_recipe(members, method="ties", base="b", density=0.3)
    config = MergeConfiguration.model_validate(yaml.safe_load(yaml.safe_dump(recipe)))
    assert config.merge_method == "ties" and config.models[0].parameters["density"] == 0.3
