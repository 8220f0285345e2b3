"""``boom-merge drift``: cosine between OLD and NEW embeddings and recall@10 on an OLD index.

Checked against an independent numpy computation on the fixture corpus of
``tests/test_evaluation.py`` (real Python docstrings and WordSim-353 pairs).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from boom_merge.incremental.drift import drift_report, format_drift
from boom_merge.errors import BoomError
from tests.test_evaluation import RETRIEVAL, WORDSIM, read_split, write_corpus
from tests.test_models import OLD_SHA, place_in_cache
from tests.tiny_models import make_tiny_bert_st


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus") / "corpus")


@pytest.fixture(scope="module")
def perturbed(tiny_bert_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny base with noise on every weight: an "update" that moved the space."""
    return make_tiny_bert_st(
        tmp_path_factory.mktemp("upd") / "upd", seed=3, perturb_from=tiny_bert_base, perturb_scale=0.05
    )


def _encode(path: Path, texts: list[str]) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    emb = SentenceTransformer(str(path), device="cpu").encode(texts)
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)


def _expected(old: Path, new: Path, corpus: Path, name: str) -> tuple[float, float, float]:
    """Mean cosine, 5th-percentile cosine and recall@10 (vs OLD's own top-10), in numpy."""
    queries, docs, _ = read_split(corpus, name)
    texts = list(queries.values()) + list(docs.values())
    cosine = np.sum(_encode(old, texts) * _encode(new, texts), axis=1)
    index = _encode(old, list(docs.values()))
    old_top = np.argsort(-(_encode(old, list(queries.values())) @ index.T), axis=1)[:, :10]
    new_top = np.argsort(-(_encode(new, list(queries.values())) @ index.T), axis=1)[:, :10]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(old_top, new_top)])
    return float(cosine.mean()), float(np.percentile(cosine, 5)), float(recall)


def test_model_against_itself_has_no_drift(tiny_bert_base: Path, corpus: Path) -> None:
    report = drift_report(tiny_bert_base, tiny_bert_base, corpus)
    assert [d.dataset for d in report.datasets] == [*RETRIEVAL, "wordsim353"]
    for d in report.datasets:
        assert d.mean_cosine == pytest.approx(1.0, abs=1e-5)
        assert d.p5_cosine == pytest.approx(1.0, abs=1e-5)
    assert [d.recall_at_10 for d in report.datasets] == [1.0, 1.0, None]
    assert not report.rebuild_index and report.verdict == "keep the index"
    assert "Verdict: keep the index (" in format_drift(report)


def test_perturbed_model_matches_numpy(tiny_bert_base: Path, perturbed: Path, corpus: Path) -> None:
    report = drift_report(tiny_bert_base, perturbed, corpus)
    by_name = {d.dataset: d for d in report.datasets}
    for name in RETRIEVAL:
        mean, p5, recall = _expected(tiny_bert_base, perturbed, corpus, name)
        d = by_name[name]
        assert d.mean_cosine == pytest.approx(mean, abs=1e-5) and d.mean_cosine < 0.999
        assert d.p5_cosine == pytest.approx(p5, abs=1e-5) and d.p5_cosine <= d.mean_cosine
        assert d.recall_at_10 == pytest.approx(recall, abs=1e-9)
        queries, docs, _ = read_split(corpus, name)
        assert (d.queries, d.texts) == (len(queries), len(queries) + len(docs))
    assert min(d.recall_at_10 for d in report.datasets if d.recall_at_10 is not None) < 1.0
    words = sorted({w for pair in WORDSIM for w in pair[:2]})
    cosine = np.sum(_encode(tiny_bert_base, words) * _encode(perturbed, words), axis=1)
    assert by_name["wordsim353"].mean_cosine == pytest.approx(float(cosine.mean()), abs=1e-5)
    assert report.rebuild_index == (report.verdict == "rebuild the index")
    text = format_drift(report)
    assert all(name in text for name in by_name)
    assert f"Verdict: {report.verdict} (" in text and f"find {report.min_recall:.1%} of OLD's top-10" in text


def test_cli_and_errors(tiny_bert_base: Path, perturbed: Path, corpus: Path, minilm_path: str, tmp_path: Path) -> None:
    from boom_merge.cli import main

    out = tmp_path / "drift.json"
    args = ["drift", str(tiny_bert_base), str(perturbed), "--data", str(corpus), "--max-queries", "4", "--json", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "recall@10" in result.output and "python_code" in result.output
    data = json.loads(out.read_text())
    assert [d["queries"] for d in data["datasets"]] == [4, 4, 0]
    with pytest.raises(BoomError, match="--max-queries must be at least 1"):
        drift_report(tiny_bert_base, perturbed, corpus, max_queries=0)
    with pytest.raises(BoomError, match="different dimensions"):
        drift_report(tiny_bert_base, minilm_path, corpus)
    bad = CliRunner().invoke(main, ["drift", str(tiny_bert_base), str(tmp_path), "--data", str(corpus)])
    last = bad.output.strip().splitlines()[-1]
    assert bad.exit_code == 1 and last.startswith("Error: ") and "modules.json" in last


def _one_error_line(result) -> str:
    """The CLI failed with exactly one ``Error:`` line and no traceback; return it."""
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert [line for line in lines if line.startswith("Error:")] == [lines[-1]]
    return lines[-1]


def test_hub_ids_resolve_from_cache(tiny_bert_base: Path, perturbed: Path, corpus: Path, hub_cache: Path) -> None:
    from boom_merge.cli import main

    place_in_cache(tiny_bert_base, hub_cache, "acme/old")
    place_in_cache(perturbed, hub_cache, "acme/new", sha=OLD_SHA, ref="v2")
    by_id = drift_report("acme/old", "acme/new@v2", corpus, device="cpu")
    by_dir = drift_report(tiny_bert_base, perturbed, corpus, device="cpu")
    assert (by_id.old, by_id.new) == ("acme/old", "acme/new@v2")
    assert [d.mean_cosine for d in by_id.datasets] == [d.mean_cosine for d in by_dir.datasets]
    result = CliRunner().invoke(main, ["drift", "acme/old", "acme/new@v2", "--corpus", str(corpus), "--device", "cpu",
                                       "--batch-size", "3", "--max-queries", "4"])
    assert result.exit_code == 0, result.output
    assert "Embedding drift: acme/old -> acme/new@v2" in result.output
    missing = CliRunner().invoke(main, ["drift", "acme/old", "acme/absent", "--corpus", str(corpus)])
    assert _one_error_line(missing).startswith("Error: acme/absent: not a local directory")


def _broken(model: Path, tmp_path: Path, how: str) -> Path:
    """A copy of ``model`` with NaN weights, no tokenizer, or a truncated safetensors file."""
    from safetensors.torch import load_file, save_file

    bad = Path(shutil.copytree(model, tmp_path / how))
    weights = bad / "model.safetensors"
    if how == "nan":
        tensors = load_file(str(weights))
        tensors["embeddings.word_embeddings.weight"][5, 2] = float("nan")
        save_file(tensors, str(weights), metadata={"format": "pt"})
    elif how == "no-tokenizer":
        for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
            (bad / name).unlink(missing_ok=True)
    else:
        weights.write_bytes(weights.read_bytes()[:-64])
    return bad


@pytest.mark.parametrize(
    ("how", "problem"),
    [
        ("nan", "model.safetensors: tensor 'embeddings.word_embeddings.weight' contains NaN or Inf values"),
        ("no-tokenizer", "no-tokenizer: no tokenizer files (missing tokenizer.json"),
        ("truncated", "model.safetensors: truncated safetensors file"),
    ],
)
def test_broken_new_model_is_refused(how: str, problem: str, tiny_bert_base: Path, corpus: Path, tmp_path: Path) -> None:
    """Not "mean cosine nan, the index still serves": one line naming the file and problem."""
    from boom_merge.cli import main

    bad = _broken(tiny_bert_base, tmp_path, how)
    result = CliRunner().invoke(main, ["drift", str(tiny_bert_base), str(bad), "--corpus", str(corpus)])
    line = _one_error_line(result)
    assert str(bad) in line and problem in line, line
    assert "still serves" not in result.output and "Verdict" not in result.output


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_refused_without_gpu(tiny_bert_base: Path, corpus: Path) -> None:
    from boom_merge.cli import main

    result = CliRunner().invoke(main, ["drift", str(tiny_bert_base), str(tiny_bert_base), "--corpus", str(corpus),
                                       "--device", "cuda"])
    assert _one_error_line(result) == "Error: --device cuda: no CUDA device available (torch.cuda.is_available() is False)"


# --- keep the index: serving quality against the qrels, query adapters -------------------

from tests.test_adapter import FIT, rotated  # noqa: E402,F401  (``rotated``: a fixture)
from tests.test_evaluation import ndcg_at_10  # noqa: E402


@pytest.fixture(scope="module")
def corpus_with_train(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture corpus plus a train split of texts that are never scored (the adapter's)."""
    root = Path(shutil.copytree(corpus, tmp_path_factory.mktemp("trained") / "corpus"))
    (root / "train").mkdir()
    lines = [json.dumps({"query": FIT[i], "pos": [FIT[i + 1]]}) for i in range(0, len(FIT) - 1, 2)]
    (root / "train" / "mix.jsonl").write_text("\n".join(lines) + "\n")
    return root


def _recall_at_10(model: Path, root: Path, name: str, index_model: Path | None = None) -> float:
    queries, docs, qrels = read_split(root, name)
    q = _encode(model, list(queries.values()))
    d = _encode(index_model or model, list(docs.values()))
    ids = list(docs)
    top = np.argsort(-(q @ d.T), axis=1)[:, :10]
    return float(np.mean([len({ids[i] for i in row} & qrels[qid]) / len(qrels[qid]) for row, qid in zip(top, queries)]))


def test_serving_scores_match_an_independent_ndcg(tiny_bert_base: Path, perturbed: Path, corpus: Path) -> None:
    report = drift_report(tiny_bert_base, perturbed, corpus)
    for d in report.datasets[:2]:
        assert set(d.serving) == {"old", "new_on_old_index", "reindexed"}  # no adapter fitted
        assert d.serving["old"].ndcg_at_10 == pytest.approx(ndcg_at_10(tiny_bert_base, corpus, d.dataset), abs=1e-6)
        assert d.serving["reindexed"].ndcg_at_10 == pytest.approx(ndcg_at_10(perturbed, corpus, d.dataset), abs=1e-6)
        assert d.serving["reindexed"].recall_at_10 == pytest.approx(_recall_at_10(perturbed, corpus, d.dataset))
        assert d.serving["new_on_old_index"].recall_at_10 == pytest.approx(
            _recall_at_10(perturbed, corpus, d.dataset, index_model=tiny_bert_base))
    assert report.datasets[2].serving is None and report.datasets[2].verdict is None
    assert "Serving quality against the qrels" in format_drift(report)


def test_the_adapter_of_a_model_to_itself_keeps_everything(tiny_bert_base: Path, corpus_with_train: Path) -> None:
    report = drift_report(tiny_bert_base, tiny_bert_base, corpus_with_train, adapter="orthogonal")
    assert report.adapter == "orthogonal" and report.adapter_texts == len(set(FIT))
    for d in report.datasets[:2]:
        assert d.adapted_recall_at_10 == 1.0 and d.recall_at_10 == 1.0
        ways = {way: s.ndcg_at_10 for way, s in d.serving.items()}
        assert ways["adapter_on_old_index"] == pytest.approx(ways["old"], abs=1e-6) == pytest.approx(ways["reindexed"])
        assert d.verdict == "keep the index"
    assert report.verdict == "keep the index"


def test_an_exactly_rotated_copy_is_served_through_the_adapter(rotated, corpus_with_train: Path,
                                                               tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    old, new, _ = rotated
    out = tmp_path / "adapter"
    report = drift_report(os.path.relpath(old), new, os.path.relpath(corpus_with_train), save_adapter=out)
    for d in report.datasets[:2]:
        assert d.recall_at_10 < 1.0 and d.adapted_recall_at_10 == 1.0
        # the rotation leaves NEW's own ranking unchanged: re-indexing and the adapter reach OLD's quality
        assert d.serving["adapter_on_old_index"].ndcg_at_10 == pytest.approx(d.serving["old"].ndcg_at_10, abs=1e-6)
        assert d.serving["reindexed"].ndcg_at_10 == pytest.approx(d.serving["old"].ndcg_at_10, abs=1e-6)
        assert d.verdict in ("keep the index with the adapter", "keep the index")
    assert report.verdict == "keep the index with the adapter"
    queries, _, _ = read_split(corpus_with_train, "python_code")
    texts = list(queries.values())
    adapted = SentenceTransformer(str(out), device="cpu").encode(texts)
    np.testing.assert_allclose(adapted, _encode(old, texts), atol=1e-4)
    record = json.loads((out / "boom_adapter.json").read_text())
    assert record["kind"] == "orthogonal" and record["fit_texts"] == len(set(FIT))
    # what was read, absolute however it was typed (a push rewrites absolute paths; a relative one would travel as is)
    assert (record["old_model"], record["new_model"], record["corpus"]) == \
        (str(old.resolve()), str(new.resolve()), str(corpus_with_train.resolve()))


def test_cli_fit_adapter(rotated, corpus: Path, corpus_with_train: Path, tmp_path: Path) -> None:
    from boom_merge.cli import main

    old, new, _ = rotated
    args = ["drift", str(old), str(new), "--corpus", str(corpus_with_train), "--fit-adapter", str(tmp_path / "a"),
            "--adapter", "affine", "--json", str(tmp_path / "d.json")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "NEW+adapter, OLD index" in result.output and "Verdict: keep the index with the adapter" in result.output
    data = json.loads((tmp_path / "d.json").read_text())
    assert data["adapter"] == "affine" and data["verdict"] == "keep the index with the adapter"
    assert data["datasets"][0]["serving"]["adapter_on_old_index"]["ndcg_at_10"] > 0
    inside = CliRunner().invoke(main, ["drift", str(old), str(new), "--corpus", str(corpus_with_train),
                                       "--fit-adapter", str(new / "adapter")])
    assert inside.exit_code == 1 and "Error:" in inside.output and not (new / "adapter").exists()
    no_train = CliRunner().invoke(main, ["drift", str(old), str(new), "--corpus", str(corpus),
                                         "--fit-adapter", str(tmp_path / "b")])
    assert "no train split" in no_train.output and not (tmp_path / "b").exists()


def test_fit_adapter_is_all_or_nothing(rotated, corpus_with_train: Path, tmp_path: Path) -> None:
    """Issue 22.3: a corrupt test split (read after the fit) leaves no adapter behind."""
    old, new, _ = rotated
    root = Path(shutil.copytree(corpus_with_train, tmp_path / "corpus"))
    (root / "sts" / "wordsim353.tsv").write_text("word1\tword2\tscore\ncat\tdog\tnot a number\n")
    with pytest.raises(BoomError, match=r"wordsim353.tsv: bad score"):
        drift_report(old, new, root, save_adapter=tmp_path / "adapter")
    assert not (tmp_path / "adapter").exists() and not list(tmp_path.glob(".adapter*"))


def test_an_empty_train_split_names_the_corpus(rotated, corpus: Path, tmp_path: Path) -> None:
    """Issue 22.2: not 'paired embeddings, got shapes (0,) and (0,)'."""
    old, new, _ = rotated
    root = Path(shutil.copytree(corpus, tmp_path / "corpus"))
    (root / "train").mkdir()
    (root / "train" / "mix.jsonl").write_text("\n")
    with pytest.raises(BoomError) as error:
        drift_report(old, new, root, adapter="orthogonal")
    assert str(error.value).startswith(f"{root}: train split (mix.jsonl) holds no text (query or pos)")
