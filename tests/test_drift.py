"""``boom-merge drift``: cosine between OLD and NEW embeddings and recall@10 on an OLD index.

Checked against an independent numpy computation on the fixture corpus of
``tests/test_evaluation.py`` (real Python docstrings and WordSim-353 pairs).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from boom_merge.drift import drift_report, format_drift
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
    assert not report.rebuild_index
    assert "still serves" in format_drift(report)


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
    assert report.rebuild_index == (report.min_recall < report.threshold)
    text = format_drift(report)
    assert all(name in text for name in by_name)
    assert ("Rebuild the index" in text) == report.rebuild_index


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
    assert "still serves" not in result.output


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_refused_without_gpu(tiny_bert_base: Path, corpus: Path) -> None:
    from boom_merge.cli import main

    result = CliRunner().invoke(main, ["drift", str(tiny_bert_base), str(tiny_bert_base), "--corpus", str(corpus),
                                       "--device", "cuda"])
    assert _one_error_line(result) == "Error: --device cuda: no CUDA device available (torch.cuda.is_available() is False)"
