"""``boom-merge eval`` beyond the local test split: a standard MTEB task offline, benchmarks
by name, the dev split, refused models, and the ID/OOD helper.

The standard task is MTEB's BIOSSES (``mteb/biosses-sts`` at mteb's pinned revision). Its
data is placed where an earlier online ``datasets.load_dataset`` would have left it (the
prepared datasets cache, ``HF_DATASETS_CACHE/mteb___biosses-sts/default/0.0.0/REV``), which
is what ``datasets`` reads under ``HF_HUB_OFFLINE``; mteb's own ``load_data`` and evaluator
then run unchanged. The pairs are not BIOSSES's (they are graded word pairs), so the score
is checked against scipy's Spearman of the same pairs, not against a published number.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from scipy.stats import spearmanr

from boom_merge.errors import BoomError
from boom_merge.evaluation import evaluate_models
from boom_merge.evaluation.summary import ID_AVG, OOD_AVG, split_averages
from tests.test_evaluation import RETRIEVAL, WORDSIM, _docstrings, ndcg_at_10, write_corpus

BIOSSES = [(f"the {a} was found", f"a {b} was found", round(score * 0.4, 3)) for a, b, score in WORDSIM]


def place_biosses(cache: Path) -> None:
    """BIOSSES's test split in the prepared-datasets layout of ``cache`` (as an online load leaves it)."""
    import mteb
    from datasets.packaged_modules.json.json import Json

    dataset = mteb.get_task("BIOSSES").metadata.dataset
    rows = cache / "rows.jsonl"
    cache.mkdir(parents=True, exist_ok=True)
    rows.write_text("".join(json.dumps({"sentence1": a, "sentence2": b, "score": s}) + "\n" for a, b, s in BIOSSES))
    builder = Json(cache_dir=str(cache / "build"), dataset_name="biosses-sts", config_name="default",
                   data_files={"test": str(rows)}, hash=dataset["revision"])
    builder.download_and_prepare()
    target = cache / "mteb___biosses-sts" / "default" / "0.0.0" / dataset["revision"]
    shutil.copytree(builder.cache_dir, target)
    info = json.loads((target / "dataset_info.json").read_text())
    (target / "dataset_info.json").write_text(json.dumps({**info, "config_name": "default"}))
    shutil.rmtree(cache / "build")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture corpus plus a dev split of python_code (other docstrings than its test split)."""
    import json as json_

    root = write_corpus(tmp_path_factory.mktemp("corpus") / "corpus")
    manifest = json_.loads((root / "manifest.json").read_text())
    manifest["sources"]["python_code"]["splits"] = ["train", "dev", "test"]
    manifest["sources"]["shell_utils"]["splits"] = ["train", "test"]
    (root / "manifest.json").write_text(json_.dumps(manifest))
    dev = root / "dev" / "python_code"
    (dev / "qrels").mkdir(parents=True)
    items = _docstrings(RETRIEVAL["python_code"][0])[::-1]  # another order: other queries
    (dev / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": q}) + "\n" for i, (q, _) in enumerate(items[:6])))
    (dev / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "title": "", "text": d}) + "\n" for i, (_, d) in enumerate(items)))
    (dev / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(6)))
    return root


@pytest.fixture
def biosses_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    import datasets.config

    cache = tmp_path_factory.getbasetemp() / "hf-datasets"
    if not (cache / "mteb___biosses-sts").is_dir():
        place_biosses(cache)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    return cache


def test_standard_mteb_task_offline_beside_local_tasks(corpus: Path, tiny_bert_base: Path, minilm_path: str,
                                                       biosses_cache: Path, tmp_path: Path) -> None:
    import mteb
    from sentence_transformers import SentenceTransformer

    trained = tmp_path / "trained"  # trained on the Hub dataset BIOSSES is built from: in-domain there
    shutil.copytree(tiny_bert_base, trained)
    (trained / "boom_member.json").write_text(json.dumps({"datasets": {"mteb/biosses-sts": {}}}))
    out = tmp_path / "out"
    summary = evaluate_models([minilm_path, trained], out, corpus=corpus, tasks=["BIOSSES", "shell_utils"],
                              max_queries=3, progress=False, labels=["base", "trained"])
    model = SentenceTransformer(minilm_path, device="cpu")
    a = model.encode([p[0] for p in BIOSSES], normalize_embeddings=True)
    b = model.encode([p[1] for p in BIOSSES], normalize_embeddings=True)
    expected = spearmanr(np.sum(a * b, axis=1), [p[2] for p in BIOSSES])[0]
    assert expected > 0.5  # a real model on real word pairs: the task is not noise
    assert summary.scores["base"]["BIOSSES"] == pytest.approx(expected, abs=1e-4)
    assert summary.in_domain == {"base": None, "trained": frozenset({"BIOSSES"})}
    saved = json.loads((out / "summary.json").read_text())
    records = {task["name"]: task for task in saved["tasks"]}
    assert records["BIOSSES"] | {"dataset": None} == {
        "name": "BIOSSES", "source": "BIOSSES", "kind": "mteb", "type": "STS", "hf_task_type": "sentence-similarity",
        "main_score": "cosine_spearman", "split": "test", "caps": None,  # caps apply to local tasks only
        "dataset": None, "domains": records["BIOSSES"]["domains"], "license": records["BIOSSES"]["license"],
    }
    assert records["BoomShellUtilsRetrieval"]["caps"] == {"max_queries": 3, "max_corpus": None}
    assert saved["model_meta"]["base"]["result_dirs"][1].startswith("results/boom-merge__base/")
    loaded = mteb.ResultCache(out).load_results(include_remote=False, validate_and_filter=True)
    scores = {(m.model_name, t.task_name): t.get_score() for m in loaded.model_results for t in m.task_results}
    assert scores == {(f"boom-merge/{m}", "BIOSSES"): pytest.approx(summary.scores[m]["BIOSSES"], abs=1e-6)
                      for m in ("base", "trained")}


def test_benchmarks_and_tasks_by_name() -> None:
    from boom_merge.cli._options import comma_names as _names
    from boom_merge.evaluation.tasks import standard_tasks

    assert _names(("MTEB(eng, v2),wordnet", " STS12 ,")) == ["MTEB(eng, v2)", "wordnet", "STS12"]
    english = standard_tasks("MTEB(eng, v2)")
    assert len(english) == 41 and "STSBenchmark" in {t.metadata.name for t in english}
    assert "AppsRetrieval" in {t.metadata.name for t in standard_tasks("MTEB(Code, v1)")}
    assert [t.metadata.name for t in standard_tasks("BIOSSES")] == ["BIOSSES"]
    with pytest.raises(BoomError, match="not a corpus source, a local task, an MTEB task or an MTEB benchmark"):
        standard_tasks("MTEB(nowhere, v9)")


def test_dev_split(corpus: Path, tiny_bert_base: Path, tmp_path: Path) -> None:
    from tests.test_evaluation import read_split

    summary = evaluate_models([tiny_bert_base], tmp_path / "dev", corpus=corpus, split="dev", progress=False)
    assert summary.tasks == ["BoomPythonCodeRetrieval"]  # the one source with a dev split
    dev_copy = tmp_path / "as-test"  # the dev files laid out as a test split, scored independently
    shutil.copytree(corpus / "dev" / "python_code", dev_copy / "test" / "python_code")
    (dev_copy / "test" / "python_code" / "qrels" / "dev.tsv").rename(dev_copy / "test" / "python_code" / "qrels" / "test.tsv")
    assert len(read_split(dev_copy, "python_code")[0]) == 6
    assert summary.scores["base"]["BoomPythonCodeRetrieval"] == pytest.approx(
        ndcg_at_10(tiny_bert_base, dev_copy, "python_code"), abs=2e-3)
    saved = json.loads((tmp_path / "dev" / "summary.json").read_text())
    assert saved["split"] == "dev" and saved["tasks"][0]["split"] == "dev"
    with pytest.raises(BoomError, match="corpus source 'shell_utils' has no dev split"):
        evaluate_models([tiny_bert_base], tmp_path / "x", corpus=corpus, split="dev", tasks=["shell_utils"])


def test_refused_models_and_names(corpus: Path, tiny_bert_base: Path, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    from boom_merge.cli import main

    no_tokenizer = tmp_path / "no-tokenizer"
    shutil.copytree(tiny_bert_base, no_tokenizer)
    (no_tokenizer / "tokenizer.json").unlink()
    with pytest.raises(BoomError, match="no tokenizer files"):
        evaluate_models([no_tokenizer], tmp_path / "o1", corpus=corpus)
    nan = tmp_path / "nan"
    shutil.copytree(tiny_bert_base, nan)
    tensors = load_file(nan / "model.safetensors")
    name = sorted(tensors)[0]
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    save_file(tensors, nan / "model.safetensors")
    args = ["eval", str(nan), "--corpus", str(corpus), "-o", str(tmp_path / "o2")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and result.output.count("Error:") == 1 and name in result.output
    assert "Traceback" not in result.output and not (tmp_path / "o2").exists()
    with pytest.raises(BoomError, match="must be ORG/NAME"):
        evaluate_models([tiny_bert_base], tmp_path / "o3", corpus=corpus, model_names=["plain"])
    with pytest.raises(BoomError, match="one --model-name per model"):
        evaluate_models([tiny_bert_base], tmp_path / "o4", corpus=corpus, model_names=["a/b", "c/d"])


def test_model_name_names_the_result_folder(corpus: Path, tiny_bert_base: Path, tmp_path: Path) -> None:
    out = tmp_path / "named"
    evaluate_models([tiny_bert_base], out, corpus=corpus, tasks=["wordsim353"], model_names=["me/boom-tiny"],
                    progress=False)
    saved = json.loads((out / "summary.json").read_text())
    folder = out / saved["model_meta"]["base"]["result_dirs"][0]
    assert folder.parent.name == "me__boom-tiny"
    assert json.loads((folder / "model_meta.json").read_text())["name"] == "me/boom-tiny"


def test_split_averages_by_hand() -> None:
    scores = {"wordnet": 0.5, "foldoc": 0.25, "devil": 0.3, "faq": 0.1, "new": 0.9}
    averages = split_averages(scores, ["wordnet", "foldoc"], ["devil", "faq"])
    assert averages == {ID_AVG: pytest.approx(0.375), OOD_AVG: pytest.approx(0.2)}  # "new" counts in neither
    assert split_averages(scores, [], ["new"]) == {ID_AVG: None, OOD_AVG: pytest.approx(0.9)}
    with pytest.raises(KeyError, match="gone"):
        split_averages(scores, ["wordnet", "gone"], [])


def test_cap_retrieval_caps_a_loaded_task_like_local_caps(corpus: Path) -> None:
    """``--cap-mteb`` caps a loaded retrieval task in place exactly as local tasks are capped when read."""
    from boom_merge.evaluation.corpus import read_retrieval
    from boom_merge.evaluation.tasks import Caps, cap_retrieval, local_tasks

    task = local_tasks(corpus, Caps())["python_code"]
    task.load_data()
    cap_retrieval(task, Caps(max_queries=4, max_corpus=9))
    data = task.dataset["default"]["test"]
    expected = read_retrieval(corpus, "python_code", max_queries=4, max_corpus=9)
    assert list(data["queries"]["id"]) == list(expected.queries)
    assert list(data["corpus"]["id"]) == list(expected.corpus) and len(expected.corpus) == 9
    assert data["relevant_docs"] == expected.qrels


def test_hub_id_from_the_cache(corpus: Path, tiny_bert_base: Path, hub_cache: Path, tmp_path: Path) -> None:
    """A model given by Hub id resolves through the HF cache; its MTEB revision is the commit."""
    from boom_merge.cli import main
    from tests.test_models import SHA, place_in_cache

    place_in_cache(tiny_bert_base, hub_cache, "acme/tiny-bert")
    out = tmp_path / "by-id"
    args = ["eval", "acme/tiny-bert", "--corpus", str(corpus), "--tasks", "wordsim353", "-o", str(out), "--device", "cpu"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "summary.json").read_text())
    assert saved["models"] == ["tiny-bert"]
    assert saved["model_meta"]["tiny-bert"] == {
        "name": "acme/tiny-bert", "revision": SHA, "result_dirs": [f"local/results/acme__tiny-bert/{SHA}"]}
    by_dir = evaluate_models([tiny_bert_base], tmp_path / "dir", corpus=corpus, tasks=["wordsim353"], progress=False)
    assert saved["scores"]["tiny-bert"] == pytest.approx(by_dir.scores["base"], abs=1e-9)
    missing = CliRunner().invoke(main, ["eval", "acme/absent", "--corpus", str(corpus), "-o", str(tmp_path / "m")])
    assert missing.exit_code == 1 and missing.output.count("Error:") == 1
    assert "acme/absent: not a local directory" in missing.output and "Traceback" not in missing.output
