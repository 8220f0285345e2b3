"""The embedding ensemble: its embeddings, and its MTEB scores on a real local corpus.

References are computed independently: sentence-transformers encodes with each
member (with the member's own query prompt), numpy averages the normalised rows,
and nDCG@10 ranks the whole corpus by cosine (scikit-learn's ``ndcg_score``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset
from mteb.types import PromptType
from sentence_transformers import SentenceTransformer
from torch.utils.data import DataLoader

from boom_merge.errors import BoomError
from boom_merge.evaluation import evaluate_models
from boom_merge.evaluation.ensemble import EnsembleEncoder
from tests.test_evaluation import read_split, write_corpus

TEXTS = ["a domestic cat", "the kernel schedules processes", "In the beginning God created", "lexicon", "x"]


def _numpy_ensemble(paths: list[Path], texts: list[str], prompt: str | None = None) -> np.ndarray:
    rows = []
    for path in paths:
        emb = SentenceTransformer(str(path), device="cpu").encode(texts, prompt=prompt, convert_to_numpy=True)
        rows.append(emb / np.linalg.norm(emb, axis=1, keepdims=True))
    mean = np.mean(rows, axis=0)
    return mean / np.linalg.norm(mean, axis=1, keepdims=True)


def _mteb_member(path: Path):
    from mteb.models.sentence_transformer_wrapper import SentenceTransformerEncoderWrapper

    return SentenceTransformerEncoderWrapper(SentenceTransformer(str(path), device="cpu"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus") / "corpus")


@pytest.mark.parametrize("prompt_type", [PromptType.query, PromptType.document])
def test_embeddings_are_the_renormalised_mean(tiny_bag, corpus, prompt_type) -> None:
    from boom_merge.evaluation.tasks import Caps, resolve_tasks

    _, members = tiny_bag
    task = resolve_tasks(corpus, ["python_code"], Caps())[0]
    encoder = EnsembleEncoder([_mteb_member(m) for m in members], "ens")
    loader = DataLoader(Dataset.from_dict({"text": TEXTS}), batch_size=2)
    got = encoder.encode(loader, task_metadata=task.metadata, hf_split="test", hf_subset="default",
                         prompt_type=prompt_type, batch_size=2, show_progress_bar=False)
    # tiny_bag's models carry the prompt "query: " for queries and none for documents
    expected = _numpy_ensemble(members, TEXTS, "query: " if prompt_type == PromptType.query else None)
    assert got.shape == (len(TEXTS), 16)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # the members differ enough that the ensemble is not simply one of them
    assert np.abs(expected - _numpy_ensemble(members[:1], TEXTS, None)).max() > 1e-3


def _ensemble_ndcg(paths: list[Path], root: Path, name: str, query_prompt: str) -> float:
    """nDCG@10 of the numpy ensemble ranking the whole corpus (scikit-learn's nDCG, binary gains)."""
    from sklearn.metrics import ndcg_score

    queries, docs, qrels = read_split(root, name)
    q = _numpy_ensemble(paths, list(queries.values()), query_prompt)
    d = _numpy_ensemble(paths, list(docs.values()), None)
    relevance = np.array([[float(did in qrels[qid]) for did in docs] for qid in queries])
    return float(ndcg_score(relevance, q @ d.T, k=10))


@pytest.fixture(scope="module")
def ensemble_eval(tiny_bag, corpus, tmp_path_factory):
    _, members = tiny_bag
    out = tmp_path_factory.mktemp("ens") / "eval"
    summary = evaluate_models(
        [members[0]], out, corpus=corpus, tasks=["python_code", "shell_utils"], in_domain=["python_code"],
        labels=["single"], ensembles={"ens-of-one": [members[0]], "ens-of-four": members}, progress=False,
    )
    return summary, out


def test_ensemble_of_one_scores_like_the_model(ensemble_eval) -> None:
    summary, _ = ensemble_eval
    for task in summary.tasks:
        assert summary.scores["ens-of-one"][task] == pytest.approx(summary.scores["single"][task], abs=1e-9)


def test_ensemble_scores_match_brute_force(ensemble_eval, tiny_bag, corpus) -> None:
    summary, out = ensemble_eval
    _, members = tiny_bag
    for source, task in (("python_code", "BoomPythonCodeRetrieval"), ("shell_utils", "BoomShellUtilsRetrieval")):
        assert summary.scores["ens-of-four"][task] == pytest.approx(
            _ensemble_ndcg(members, corpus, source, "query: "), abs=1e-4
        )
    assert summary.value("ens-of-four", "ID avg") == summary.scores["ens-of-four"]["BoomPythonCodeRetrieval"]
    saved = json.loads((out / "summary.json").read_text())
    assert saved["model_paths"]["ens-of-four"] == [str(m) for m in members]
    info = saved["model_meta"]["ens-of-four"]
    single = saved["model_meta"]["single"]
    assert info["name"] == "boom-merge/ens-of-four" and len(info["revision"]) == 64
    assert info["revision"] != saved["model_meta"]["ens-of-one"]["revision"]
    meta = json.loads((out / info["result_dirs"][0] / "model_meta.json").read_text())
    single_meta = json.loads((out / single["result_dirs"][0] / "model_meta.json").read_text())
    assert meta["n_parameters"] == 4 * single_meta["n_parameters"]  # four members of one architecture
    assert meta["embed_dim"] == single_meta["embed_dim"] == 16
    assert meta["training_datasets"] is None  # the members' data is unknown


def test_bad_ensembles_are_refused(tiny_bag, corpus, tmp_path) -> None:
    _, members = tiny_bag
    with pytest.raises(BoomError, match="at least one member"):
        evaluate_models([], tmp_path / "a", corpus=corpus, ensembles={"e": []})
    with pytest.raises(BoomError, match="must differ"):
        evaluate_models([members[0]], tmp_path / "b", corpus=corpus, labels=["e"], ensembles={"e": members})
    with pytest.raises(BoomError, match="nope: not a local directory"):
        evaluate_models([], tmp_path / "c", corpus=corpus, ensembles={"e": [tmp_path / "nope"]})
    assert not any((tmp_path / name).exists() for name in "abc")
