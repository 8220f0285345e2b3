"""Merged outputs are sentence-transformers models that embed like a hand-made merge."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from huggingface_hub import ModelCard
from sentence_transformers import SentenceTransformer

from boom_merge.merge.pipeline import merge_recipe
from tests.reference_merges import hand_merged_embeddings, np_linear, np_multislerp
from tests.tiny_models import make_tiny_st, write_recipe

TEXTS = ["The cat sat on the mat.", "A function returns a value.", "query about Unix pipes", "x"]


def _recipe(path: Path, members: list[Path], method: str = "boom", base: Path | None = None, **params) -> Path:
    return write_recipe(path, method, members[:4], base=base, parameters=params, weights=[1.0, 2.0, 3.0, 4.0])


def _embed(path: Path, texts=TEXTS, **kwargs) -> np.ndarray:
    return SentenceTransformer(str(path), device="cpu").encode(list(texts), convert_to_numpy=True, **kwargs)


@pytest.mark.parametrize("interpolation", ["slerp", "linear"])
def test_boom_merge_output_embeds_like_hand_merge(tmp_path, tiny_bag, interpolation) -> None:
    base, members = tiny_bag
    out = merge_recipe(_recipe(tmp_path / "r.yml", members, base=base, interpolation=interpolation), tmp_path / "out")
    weights = [1.0, 2.0, 3.0, 4.0]
    if interpolation == "slerp":
        fn = lambda arrays: np_multislerp(arrays[:-1], weights, base=arrays[-1])  # noqa: E731
    else:
        fn = lambda arrays: np_linear(arrays[:-1], weights)  # noqa: E731
    expected = hand_merged_embeddings([*members, base], fn, TEXTS)
    got = _embed(out)
    assert np.abs(got - expected).max() <= 1e-5
    # Dense head was merged, not copied from one member
    member_only = _embed(members[0])
    assert np.abs(got - member_only).max() > 1e-3
    # prompts, pooling and normalisation survived
    merged = SentenceTransformer(str(out), device="cpu")
    assert merged.prompts["query"] == "query: "
    assert [type(m).__name__ for m in merged] == ["Transformer", "Pooling", "Dense", "Normalize"]
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    query = merged.encode(["pipes"], prompt_name="query")
    np.testing.assert_allclose(query, merged.encode(["query: pipes"]), atol=1e-6)


def test_plain_mergekit_yaml_writes_a_sentence_transformers_model(tmp_path, tiny_bag) -> None:
    """The installed `mergekit-yaml` script, unmodified, finds `boom` and writes ST files, lineage and a card.

    OUT exists (empty) and is not an input: mergekit's own choice to write into it stays.
    """
    import os
    import sysconfig

    base, members = tiny_bag
    recipe = _recipe(tmp_path / "r.yml", members)
    out = tmp_path / "out"
    out.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "BOOM_MERGE_DISABLE_HOOK"}
    result = subprocess.run([str(Path(sysconfig.get_path("scripts")) / "mergekit-yaml"), str(recipe), str(out)],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    expected = hand_merged_embeddings(members, lambda a: np_multislerp(a, [1.0, 2.0, 3.0, 4.0]), TEXTS)
    assert np.abs(_embed(out) - expected).max() <= 1e-5
    for name in ("modules.json", "config_sentence_transformers.json", "sentence_bert_config.json",
                 "1_Pooling/config.json", "2_Dense/model.safetensors", "3_Normalize", "boom_lineage.json"):
        assert (out / name).exists(), name
    lineage = json.loads((out / "boom_lineage.json").read_text())
    assert [Path(i["path"]) for i in lineage["inputs"]] == [Path(m).absolute() for m in members]
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "sentence-transformers" and "# out" in card.text


def test_inputs_dtype_is_kept_and_dtype_overrides(tmp_path, tiny_bag) -> None:
    """bf16 members give a bf16 model (transformer and Dense) computed in float32; dtype= overrides."""
    import torch
    from safetensors.torch import load_file

    base, members = tiny_bag
    half = []
    for member in members[:2]:
        model = SentenceTransformer(str(member), device="cpu").to(torch.bfloat16)
        model.save(str(tmp_path / member.name))
        half.append(tmp_path / member.name)
    recipe = _recipe(tmp_path / "r.yml", half, interpolation="linear")
    out = merge_recipe(recipe, tmp_path / "out")
    assert json.loads((out / "config.json").read_text()).get("dtype", json.loads(
        (out / "config.json").read_text()).get("torch_dtype")) == "bfloat16"
    for file, key in (("model.safetensors", "encoder.layer.0.attention.self.query.weight"),
                      ("2_Dense/model.safetensors", "linear.weight")):
        merged = load_file(str(out / file))[key]
        inputs = [load_file(str(m / file))[key].double() for m in half]
        exact = (1.0 * inputs[0] + 2.0 * inputs[1]) / 3.0  # float64
        assert merged.dtype == torch.bfloat16
        assert ((merged.double() - exact).abs() <= 2.0 ** -8 * exact.abs() + 1e-30).all()  # bf16 rounding only
    wide = merge_recipe(recipe, tmp_path / "wide", dtype="float32")
    assert load_file(str(wide / "model.safetensors"))["pooler.dense.weight"].dtype == torch.float32


def test_model_card_metadata(tmp_path, tiny_bag) -> None:
    base, members = tiny_bag
    recipe = _recipe(tmp_path / "r.yml", members[:2])
    out = merge_recipe(recipe, tmp_path / "merged-model")
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "sentence-transformers"
    assert "# merged-model" in card.text and ".tmp-" not in card.text  # the final name, never the temp dir's
    assert (out / "boom_recipe.yml").read_text() == recipe.read_text()


@pytest.mark.parametrize(
    ("variant", "message"),
    [
        ({"pooling": "cls"}, "pooling_mode"),
        ({"normalize": False}, "modules"),
        ({"prompts": {"query": "search: "}}, "prompts"),
    ],
)
def test_inputs_that_embed_differently_are_refused(tmp_path, tiny_bag, variant, message) -> None:
    from boom_merge.errors import BoomError

    base, members = tiny_bag
    options = {"dense_out": 16, "prompts": {"query": "query: "}, **variant}
    odd = make_tiny_st(tmp_path / "odd", seed=9, **options)
    with pytest.raises(BoomError, match=message) as info:
        merge_recipe(_recipe(tmp_path / "r.yml", [members[0], odd]), tmp_path / "out")
    assert str(odd) in str(info.value) and str(members[0]) in str(info.value)
    assert not (tmp_path / "out").exists()


def test_different_vocabularies_are_refused(tmp_path, tiny_bag) -> None:
    from transformers import AutoTokenizer

    from boom_merge.errors import BoomError

    base, members = tiny_bag
    odd = make_tiny_st(tmp_path / "odd", seed=1, perturb_from=members[0])
    tokenizer = AutoTokenizer.from_pretrained(str(odd))
    tokenizer.add_tokens(["[NEWTOKEN]"])
    tokenizer.save_pretrained(str(odd))
    with pytest.raises(BoomError, match="vocab"):
        merge_recipe(_recipe(tmp_path / "r.yml", [members[0], odd]), tmp_path / "out")


def test_settings_are_copied_verbatim(tmp_path, tiny_bag) -> None:
    base, members = tiny_bag
    out = merge_recipe(_recipe(tmp_path / "r.yml", members[:2]), tmp_path / "out")
    for name in ("modules.json", "sentence_bert_config.json", "1_Pooling/config.json"):
        assert json.loads((out / name).read_text()) == json.loads((members[0] / name).read_text())


def test_module_saved_without_its_folder_uses_defaults(tmp_path, tiny_bag) -> None:
    """The bundled all-MiniLM-L6-v2 lists 2_Normalize in modules.json but ships no folder."""
    import shutil

    base, members = tiny_bag
    old_style = shutil.copytree(base, tmp_path / "old-style-base")
    shutil.rmtree(old_style / "3_Normalize")
    assert SentenceTransformer(str(old_style), device="cpu").encode(["x"]).shape == (1, 16)
    out = merge_recipe(_recipe(tmp_path / "r.yml", members[:2], base=old_style), tmp_path / "out")
    weights = [1.0, 2.0]
    expected = hand_merged_embeddings([*members[:2], base], lambda a: np_multislerp(a[:-1], weights, base=a[-1]), TEXTS)
    got = _embed(out)
    assert np.abs(got - expected).max() <= 1e-5
    assert (out / "3_Normalize").is_dir()


def test_settings_are_compared_as_sentence_transformers_reads_them(tmp_path, minilm_path) -> None:
    """MiniLM was saved by sentence-transformers 2.0 (pooling_mode_mean_tokens, no prompts);
    a member re-saved today writes pooling_mode "mean" and empty prompts: same embedding."""
    import json as _json

    from boom_merge.errors import BoomError
    from boom_merge.merge.st_head import check_compatible, read_head

    member = make_tiny_st(tmp_path / "member", seed=1, perturb_from=minilm_path, perturb_scale=0.0)
    assert "pooling_mode" in _json.loads((member / "1_Pooling/config.json").read_text())
    assert "pooling_mode_mean_tokens" in _json.loads((Path(minilm_path) / "1_Pooling/config.json").read_text())
    check_compatible([read_head(minilm_path), read_head(member)])
    config = _json.loads((member / "1_Pooling/config.json").read_text())
    (member / "1_Pooling/config.json").write_text(_json.dumps({**config, "pooling_mode": "cls"}))
    with pytest.raises(BoomError, match="Pooling"):
        check_compatible([read_head(minilm_path), read_head(member)])


def test_tokenizer_settings_follow_the_members_not_the_base(tmp_path, tiny_bag) -> None:
    """mergekit copies the base's tokenizer; a member trained with a shorter max length
    must keep it, or the merge embeds long texts differently from its members."""
    import json as _json
    import shutil

    base, members = tiny_bag
    short = [shutil.copytree(m, tmp_path / m.name) for m in members[:2]]
    for member in short:
        model = SentenceTransformer(str(member), device="cpu")
        model.max_seq_length = 24
        model.save(str(member))
    out = merge_recipe(_recipe(tmp_path / "r.yml", short, method="task_arithmetic", base=base), tmp_path / "out")
    assert SentenceTransformer(str(out), device="cpu").max_seq_length == 24
    assert SentenceTransformer(str(base), device="cpu").max_seq_length != 24
    tokenizer = _json.loads((out / "tokenizer_config.json").read_text())
    assert tokenizer == _json.loads((short[0] / "tokenizer_config.json").read_text())


def test_hub_ids_as_merge_inputs_resolve_from_the_cache(tmp_path, tiny_bag, hub_cache) -> None:
    """`model: org/name@REV` is resolved (offline: the HF cache) and checked like a local dir."""
    from tests.test_models import SHA, place_in_cache

    base, members = tiny_bag
    place_in_cache(members[1], hub_cache, "acme/member-1")
    recipe = tmp_path / "r.yml"
    recipe.write_text(yaml.safe_dump({"merge_method": "boom", "models": [
        {"model": str(members[0])}, {"model": f"acme/member-1@{SHA}"}]}))
    out = merge_recipe(recipe, tmp_path / "out")
    expected = hand_merged_embeddings(members[:2], lambda a: np_multislerp(a, [1.0, 1.0]), TEXTS)
    assert np.abs(_embed(out) - expected).max() <= 1e-5
    records = json.loads((out / "boom_lineage.json").read_text())["inputs"]
    assert any("acme/member-1" in json.dumps(record) for record in records)
