"""BERT, XLM-RoBERTa and Qwen3 embedders merge end to end; so does the real MiniLM."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from safetensors import safe_open
from sentence_transformers import SentenceTransformer

from boom_merge.merge.pipeline import merge_recipe
from tests.reference_merges import hand_merged_embeddings, np_multislerp
from tests.tiny_models import make_tiny_st

TEXTS = ["An apple a day.", "def main(): return 0", "The quick brown fox"]


def _boom_recipe(path, members, base=None):
    recipe = {"merge_method": "boom", "models": [{"model": str(m)} for m in members]}
    if base is not None:
        recipe["base_model"] = str(base)
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.mark.parametrize(
    ("arch", "pooling"), [("bert", "mean"), ("xlm-roberta", "mean"), ("qwen3", "lasttoken")]
)
def test_tiny_architectures_merge_like_hand_merge(tmp_path, arch, pooling) -> None:
    base = make_tiny_st(tmp_path / "base", arch=arch, pooling=pooling)
    members = [make_tiny_st(tmp_path / f"m{i}", seed=i + 1, perturb_from=base) for i in range(3)]
    out = merge_recipe(_boom_recipe(tmp_path / "r.yml", members, base), tmp_path / "out")
    expected = hand_merged_embeddings([*members, base], lambda a: np_multislerp(a[:-1], [1, 1, 1], a[-1]), TEXTS)
    got = SentenceTransformer(str(out), device="cpu").encode(TEXTS)
    assert np.abs(got - expected).max() <= 1e-5
    if arch == "qwen3":  # Qwen3-Embedding layout: no "model." prefix, kept as is
        with safe_open(str(out / "model.safetensors"), "pt") as handle:
            assert "embed_tokens.weight" in handle.keys()


def test_real_minilm_bag_of_four_merges(tmp_path, minilm_path) -> None:
    """all-MiniLM-L6-v2 has an all-zero pooler.dense.bias: mergekit's multislerp cannot merge
    4 such members; boom can, and the merged model embeds like the hand merge."""
    with safe_open(f"{minilm_path}/model.safetensors", "pt") as handle:
        assert not handle.get_tensor("pooler.dense.bias").any()
    members = [make_tiny_st(tmp_path / f"m{i}", seed=i + 1, perturb_from=minilm_path, perturb_scale=0.002)
               for i in range(4)]
    for member in members:  # fine-tuning leaves the unused pooler untouched
        from safetensors.torch import load_file, save_file

        state = load_file(str(member / "model.safetensors"))
        state["pooler.dense.bias"].zero_()
        save_file(state, str(member / "model.safetensors"), metadata={"format": "pt"})
    out = merge_recipe(_boom_recipe(tmp_path / "r.yml", members), tmp_path / "out")
    with safe_open(str(out / "model.safetensors"), "pt") as handle:
        assert not handle.get_tensor("pooler.dense.bias").any()
    expected = hand_merged_embeddings(members, lambda a: np_multislerp(a, [1, 1, 1, 1]), TEXTS)
    got = SentenceTransformer(str(out), device="cpu").encode(TEXTS)
    assert np.abs(got - expected).max() <= 1e-5
    assert json.loads((out / "modules.json").read_text())[-1]["path"].endswith("Normalize")
