"""The sentence-transformers door: ``SentenceTransformer.merge(..., method="boom")`` equals
``boom-merge merge`` of the same recipe, and ``boom-merge card`` gives such a model our lineage and card.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from huggingface_hub import ModelCard
from sentence_transformers import SentenceTransformer

from boom_merge.card.body import START
from boom_merge.cli import main
from boom_merge.errors import BoomError
from boom_merge.merge.methods import register_methods
from boom_merge.merge.merged_elsewhere import write_card
from boom_merge.merge.pipeline import merge_recipe
from tests.test_bad_input import _fails
from tests.tiny_models import write_recipe

register_methods()  # as the hook does when mergekit loads (a no-op if it already has)

TEXTS = ["An apple a day.", "def main(): return 0", "The quick brown fox", "query: who wrote Hamlet"]


def _recipe(path: Path, method: str, models: list[Path], base: Path | None, parameters: dict) -> Path:
    return write_recipe(path, method, models, base=base, parameters=parameters)


def _st_merged(method: str, models: list[Path], base: Path | None, parameters: dict) -> SentenceTransformer:
    """The one call a sentence-transformers >= 6.2 user makes (OLD is both input and base for boom_incremental)."""
    inputs = [base, *models] if method == "boom_incremental" else models
    return SentenceTransformer.merge([str(m) for m in inputs], method=method,
                                     base_model=str(base) if base is not None else None, parameters=parameters)


CASES = {
    "boom-with-base": ("boom", True, {}),
    "boom-without-base": ("boom", False, {}),
    "boom-with-base-and-scale": ("boom", True, {"scale": 0.5}),
    "boom_incremental": ("boom_incremental", True, {"update_weight": 0.3}),
}


@pytest.mark.parametrize("case", CASES)
def test_sentence_transformers_merge_equals_boom_merge(tiny_bag, tmp_path: Path, case: str) -> None:
    method, with_base, parameters = CASES[case]
    base, members = tiny_bag
    models = members[:1] if method == "boom_incremental" else members[:3]
    base = (members[1] if method == "boom_incremental" else base) if with_base else None  # OLD: another member
    out = merge_recipe(_recipe(tmp_path / "r.yml", method, models, base, parameters), tmp_path / "out")
    ours = SentenceTransformer(str(out), device="cpu")
    theirs = _st_merged(method, models, base, parameters)
    assert ours.dtype == theirs.dtype == torch.float32
    for prompt in (None, "query"):
        a = ours.encode(TEXTS, prompt_name=prompt, convert_to_numpy=True)
        b = theirs.encode(TEXTS, prompt_name=prompt, convert_to_numpy=True)
        assert a.dtype == b.dtype == np.float32
        assert np.abs(a - b).max() <= 1e-6, case
    single = members[0]
    assert np.abs(ours.encode(TEXTS) - SentenceTransformer(str(single), device="cpu").encode(TEXTS)).max() > 1e-4


# --- boom-merge card MODEL --recipe RECIPE ------------------------------------------------------


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture()
def merged_in_python(tiny_bag, tmp_path: Path) -> tuple[Path, Path]:
    """A model merged with sentence-transformers' API and saved, and the recipe that describes it."""
    base, members = tiny_bag
    recipe = _recipe(tmp_path / "boom.yml", "boom", members[:3], base, {"scale": 0.5})
    model = tmp_path / "merged"
    _st_merged("boom", members[:3], base, {"scale": 0.5}).save_pretrained(str(model))
    return model, recipe


def test_card_writes_our_lineage_and_card_and_leaves_the_weights(merged_in_python, tiny_bag, tmp_path: Path) -> None:
    model, recipe = merged_in_python
    base, members = tiny_bag
    before = _files(model)
    result = CliRunner().invoke(main, ["card", str(model), "--recipe", str(recipe)])
    assert result.exit_code == 0, result.output
    after = _files(model)
    written = {"README.md", "boom_lineage.json", "boom_recipe.yml"}
    assert {k for k in after if not k.startswith("boom_members/")} == set(before) | written
    assert all(after[k] == v for k, v in before.items() if k != "README.md")  # weights and settings untouched
    lineage = json.loads((model / "boom_lineage.json").read_text())
    assert lineage["kind"] == "merge" and lineage["method"] == "boom"
    roles = [(Path(i["path"]).name, i["role"]) for i in lineage["inputs"]]
    assert sorted(roles) == sorted([*((m.name, "member") for m in members[:3]), (base.name, "base")])
    assert (model / "boom_recipe.yml").read_text() == recipe.read_text()
    card = ModelCard.load(model / "README.md")
    assert START in card.text and "boom-merge" in card.data.tags
    assert not list(tmp_path.glob(".merged.*"))  # no stage, no lock left
    # the card equals the one boom-merge merge writes for the same recipe (one card writer)
    ours = merge_recipe(recipe, tmp_path / "ours")
    strip = lambda text: text.replace("ours", "merged")  # noqa: E731 - the title is the dir name
    assert strip((ours / "README.md").read_text()) == (model / "README.md").read_text()
    # a second run replaces the records
    assert write_card(model, recipe) == model / "README.md"


def test_card_refuses_bad_input_and_writes_nothing(merged_in_python, tiny_bag, tiny_bert_base: Path,
                                                   tmp_path: Path) -> None:
    model, recipe = merged_in_python
    base, members = tiny_bag
    before = _files(model)
    _fails(["card", tmp_path / "absent", "--recipe", recipe], "absent", "model directory not found")
    garbage = tmp_path / "garbage.yml"
    garbage.write_text("merge_method: [boom\n")
    _fails(["card", model, "--recipe", garbage], str(garbage))
    other = _recipe(tmp_path / "other.yml", "boom", [tiny_bert_base, tiny_bert_base.parent / "twin"], None, {})
    import shutil

    shutil.copytree(tiny_bert_base, tiny_bert_base.parent / "twin", dirs_exist_ok=True)
    _fails(["card", model, "--recipe", other], str(model), "do not match")
    own = _recipe(tmp_path / "own.yml", "boom", [model, members[0]], None, {})
    _fails(["card", model, "--recipe", own], "is the input")
    assert _files(model) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    with pytest.raises(BoomError, match="model directory not found"):
        write_card(tmp_path / "absent", recipe)


def test_card_refuses_a_recipe_whose_merge_is_another_model(merged_in_python, tiny_bag, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """The same inputs and head, but not this model: other weights, no scale, or not merged at all (a copy of
    the base). Sampled tensors are merged from the inputs by mergekit's in-memory API and compared."""
    import shutil

    from boom_merge.merge.merged_elsewhere import SAMPLED, _sample

    model, recipe = merged_in_python
    base, members = tiny_bag
    before = _files(model)
    for name, weights, parameters in [("unscaled", None, {}), ("weighted", [1, 2, 1], {"scale": 0.5})]:
        other = _recipe(tmp_path / f"{name}.yml", "boom", members[:3], base, parameters)
        if weights:
            data = yaml.safe_load(other.read_text())
            for entry, weight in zip(data["models"], weights):
                entry["parameters"] = {"weight": weight}
            other.write_text(yaml.safe_dump(data))
        _fails(["card", model, "--recipe", other], str(model), "the recipe does not describe this model: its merge "
               "of tensor")
    copy = tmp_path / "not-merged"
    shutil.copytree(base, copy)
    _fails(["card", copy, "--recipe", recipe], str(copy), "does not describe this model")
    assert _files(model) == before
    # the right recipe passes, whose tensors were compared by value; a random method is compared by structure only
    from boom_merge.merge.checks import model_files

    assert len(_sample(model_files(model).tensors)) == SAMPLED
    assert write_card(model, recipe) == model / "README.md"
    dare = _recipe(tmp_path / "dare.yml", "dare_linear", members[:3], base, {})
    data = yaml.safe_load(dare.read_text())
    for entry in data["models"]:
        entry["parameters"] = {"weight": 1.0, "density": 0.5}
    dare.write_text(yaml.safe_dump(data))
    with caplog.at_level("WARNING"):
        write_card(model, dare)  # not what merged it, but a random mask cannot be replayed: said so
    assert "by structure only, not by value (dare_linear draws random masks)" in caplog.text


def test_card_of_a_merge_of_hub_models_compares_the_snapshots(tiny_bag, hub_cache, tmp_path: Path) -> None:
    """Inputs named by Hub id (an `hf download` cache, symlinked blobs): the value check reads the snapshots,
    the recipe naming them passes, one naming other weights does not; the cache is left as it was."""
    from tests.test_models import place_in_cache
    from tests.test_path_safety import tree_sha256

    base, members = tiny_bag
    for i, member in enumerate(members[:2]):
        place_in_cache(member, hub_cache, f"acme/member-{i}")
    place_in_cache(base, hub_cache, "acme/base")
    model = tmp_path / "merged"
    _st_merged("boom", members[:2], base, {"scale": 0.5}).save_pretrained(str(model))
    cache = tree_sha256(hub_cache)
    recipe = tmp_path / "boom.yml"
    recipe.write_text(yaml.safe_dump({"merge_method": "boom", "base_model": "acme/base", "parameters": {"scale": 0.5},
                                      "models": [{"model": f"acme/member-{i}"} for i in range(2)]}))
    assert write_card(model, recipe) == model / "README.md"
    lineage = json.loads((model / "boom_lineage.json").read_text())
    assert sorted(i["hub_id"] for i in lineage["inputs"]) == ["acme/base", "acme/member-0", "acme/member-1"]
    other = tmp_path / "other.yml"
    other.write_text(recipe.read_text().replace("scale: 0.5", "scale: 0.6"))
    with pytest.raises(BoomError, match="the recipe does not describe this model"):
        write_card(model, other)
    assert tree_sha256(hub_cache) == cache


def test_card_help_has_examples() -> None:
    result = CliRunner().invoke(main, ["card", "--help"])
    assert result.exit_code == 0 and "Examples:" in result.output and "--recipe" in result.output
