"""Query adapters: Procrustes against scipy, identity on itself, a recovered rotation, the saved model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.linalg import orthogonal_procrustes
from sentence_transformers import SentenceTransformer
from sentence_transformers.models import Dense, Normalize

from boom_merge.incremental.adapter import fit_adapter, fit_affine, fit_procrustes, fit_texts, save_adapter_model
from boom_merge.errors import BoomError

TEXTS = ["a domestic cat", "the kernel schedules processes", "In the beginning God created the heaven",
         "lexicon", "ls lists directory contents", "a word that means happy", "grep searches files",
         "and the earth was without form", "a small dog", "printf formats output"]
# enough distinct texts to span the tiny model's 32 dimensions (a rotation is then determined)
_WORDS = " ".join(TEXTS).split()
FIT = [" ".join(np.random.default_rng(i).choice(_WORDS, 5)) for i in range(120)]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_procrustes_matches_scipy() -> None:
    rng = np.random.default_rng(0)
    new, old = _unit(rng.normal(size=(200, 12))), _unit(rng.normal(size=(200, 12)))
    rotation, _ = orthogonal_procrustes(new, old)  # argmin ||new @ R - old||, R orthogonal
    adapter = fit_procrustes(new, old)
    np.testing.assert_allclose(adapter.weight, rotation.T, atol=1e-10)
    np.testing.assert_allclose(adapter.weight @ adapter.weight.T, np.eye(12), atol=1e-10)


def test_the_adapter_of_embeddings_to_themselves_is_the_identity() -> None:
    x = _unit(np.random.default_rng(1).normal(size=(50, 8)))
    np.testing.assert_allclose(fit_procrustes(x, x).weight, np.eye(8), atol=1e-10)
    affine = fit_affine(x, x, ridge=0.0)
    np.testing.assert_allclose(affine.weight, np.eye(8), atol=1e-8)
    np.testing.assert_allclose(affine.bias, 0.0, atol=1e-8)


def test_too_few_texts_leave_the_undetermined_directions_as_they_are() -> None:
    """5 texts in 12 dimensions: 7 directions are undetermined. The plain ``U Vᵀ`` rotates them
    arbitrarily; the fit keeps the optimum nearest the identity, the limit of polar(oldᵀnew + λI)."""
    rng = np.random.default_rng(4)
    new = _unit(rng.normal(size=(5, 12)))
    old = _unit(new + 0.05 * rng.normal(size=(5, 12)))
    u, _, vt = np.linalg.svd(old.T @ new)
    assert np.linalg.norm(u @ vt - np.eye(12)) > 1.0  # what an arbitrary completion does
    weight = fit_procrustes(new, old).weight
    np.testing.assert_allclose(weight @ weight.T, np.eye(12), atol=1e-12)
    product = old.T @ new
    for lam in (1e-5, 1e-7):  # the identity-regularised Procrustes, independently (off by ~2λ)
        a, s, b = np.linalg.svd(product + lam * np.linalg.norm(product, 2) * np.eye(12))
        np.testing.assert_allclose(weight, a @ b, atol=10 * lam)
    # as good as the plain fit on the texts it was fitted on
    np.testing.assert_allclose(np.linalg.norm(new @ weight.T - old), np.linalg.norm(new @ (u @ vt).T - old),
                               atol=1e-10)
    # the same texts on both sides: nothing to map
    np.testing.assert_allclose(fit_procrustes(new, new).weight, np.eye(12), atol=1e-12)


def test_too_few_texts_between_different_widths_are_refused() -> None:
    rng = np.random.default_rng(5)
    with pytest.raises(BoomError, match="3 fit texts span 3 dimensions; an orthogonal adapter from width 10 to 8"):
        fit_procrustes(_unit(rng.normal(size=(3, 10))), _unit(rng.normal(size=(3, 8))))
    assert fit_procrustes(_unit(rng.normal(size=(30, 10))), _unit(rng.normal(size=(30, 8)))).weight.shape == (8, 10)


def test_affine_fit_matches_least_squares_and_recovers_a_shifted_map() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 6))
    true_w, true_b = rng.normal(size=(4, 6)), rng.normal(size=4)
    y = x @ true_w.T + true_b
    adapter = fit_affine(x, y, ridge=0.0)
    np.testing.assert_allclose(adapter.weight, true_w, atol=1e-8)
    np.testing.assert_allclose(adapter.bias, true_b, atol=1e-8)
    # with a ridge: the closed form of numpy's lstsq on the augmented system
    ridge = 0.1
    xc, yc = x - x.mean(0), y - y.mean(0)
    augmented = np.vstack([xc, np.sqrt(ridge * len(x)) * np.eye(6)])
    expected, *_ = np.linalg.lstsq(augmented, np.vstack([yc, np.zeros((6, 4))]), rcond=None)
    np.testing.assert_allclose(fit_affine(x, y, ridge=ridge).weight, expected.T, atol=1e-8)


def test_bad_pairs_are_refused() -> None:
    with pytest.raises(BoomError, match="paired"):
        fit_procrustes(np.ones((3, 4)), np.ones((2, 4)))
    with pytest.raises(BoomError, match="NaN"):
        fit_procrustes(np.full((3, 4), np.nan), np.ones((3, 4)))
    with pytest.raises(BoomError, match="unknown adapter kind"):
        fit_adapter(np.ones((3, 4)), np.ones((3, 4)), kind="spline")  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def rotated(tiny_bert_base, tmp_path_factory):
    """OLD = the tiny model; NEW = OLD followed by a known random rotation Q (then Normalize)."""
    q, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(32, 32)))
    model = SentenceTransformer(str(tiny_bert_base), device="cpu")
    dense = Dense(32, 32, bias=False, activation_function=torch.nn.Identity())
    with torch.no_grad():
        dense.linear.weight.copy_(torch.from_numpy(q.astype(np.float32)))
    model.append(dense)
    model.append(Normalize())
    new = tmp_path_factory.mktemp("rot") / "new"
    model.save(str(new))
    return tiny_bert_base, new, q


def test_a_rotated_copy_is_mapped_back_exactly(rotated, tmp_path) -> None:
    old_path, new_path, q = rotated
    old, new = (SentenceTransformer(str(p), device="cpu") for p in (old_path, new_path))
    new_fit = new.encode(FIT, normalize_embeddings=True)
    adapter = fit_procrustes(new_fit, old.encode(FIT, normalize_embeddings=True))
    old_e = old.encode(TEXTS, normalize_embeddings=True)
    # Q^T on every direction the embeddings have: the tiny model's (LayerNorm without a learnt shift,
    # mean-pooled) sum to zero, so they span 31 of the 32 dimensions and the 32nd is no text's
    np.testing.assert_allclose(new_fit @ adapter.weight.T, new_fit @ q, atol=1e-4)
    out = save_adapter_model(new_path, adapter, tmp_path / "adapter", inputs=(old_path,))
    adapted = SentenceTransformer(str(out), device="cpu").encode(TEXTS)
    np.testing.assert_allclose(adapted, old_e, atol=1e-4)
    # nearest OLD document of every adapted query is the one OLD itself finds: recall 1.0
    assert (np.argmax(adapted @ old_e.T, axis=1) == np.arange(len(TEXTS))).all()
    record = json.loads((out / "boom_adapter.json").read_text())
    assert record["kind"] == "orthogonal" and record["old_dim"] == 32


def test_saved_model_embeds_as_w_times_new(rotated, tmp_path) -> None:
    _, new_path, _ = rotated
    rng = np.random.default_rng(4)
    weight, bias = rng.normal(size=(16, 32)), rng.normal(size=16)
    from boom_merge.incremental.adapter import Adapter

    out = save_adapter_model(new_path, Adapter(weight, bias, "affine"), tmp_path / "a")
    new_e = SentenceTransformer(str(new_path), device="cpu").encode(TEXTS, normalize_embeddings=True)
    expected = _unit(new_e @ weight.T + bias)
    got = SentenceTransformer(str(out), device="cpu").encode(TEXTS)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    with pytest.raises(BoomError, match="expects 32-dim embeddings, the model gives 16"):
        save_adapter_model(out, Adapter(weight, bias, "affine"), tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_fit_texts_read_only_the_train_split(tmp_path) -> None:
    (tmp_path / "train").mkdir()
    (tmp_path / "test/x").mkdir(parents=True)
    (tmp_path / "train/a.jsonl").write_text(
        json.dumps({"query": "q1", "pos": ["p1"], "neg": ["n1"]}) + "\n" + json.dumps({"query": "q2", "pos": ["p1"]})
    )
    (tmp_path / "test/x/queries.jsonl").write_text(json.dumps({"_id": "1", "text": "test query"}))
    assert sorted(fit_texts(tmp_path)) == ["p1", "q1", "q2"]
    assert len(fit_texts(tmp_path, limit=2)) == 2
    (tmp_path / "train/b.jsonl").write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(BoomError, match="b.jsonl"):
        fit_texts(tmp_path)
