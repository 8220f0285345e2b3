"""``boom-merge eval``: real MTEB runs on a small corpus built from real text.

The fixture corpus uses Python standard-library docstrings (query: a function's
qualified name, relevant document: its docstring) and WordSim-353 word pairs, written
in the layout ``boom-merge data build`` produces. Scores are checked against an
independent brute-force computation (cosine ranking + our own nDCG@10, scipy's
Spearman).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import re
import shutil
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from click.testing import CliRunner
from scipy.stats import spearmanr

from boom_merge.errors import BoomError
from boom_merge.evaluation import evaluate_models, training_datasets
from boom_merge.evaluation.summary import ID_AVG, OOD_AVG, Summary, to_markdown, to_text

# A slice of WordSim-353 (Finkelstein et al. 2002): word1, word2, mean human score 0-10.
WORDSIM = [
    ("tiger", "cat", 7.35), ("book", "paper", 7.46), ("computer", "keyboard", 7.62),
    ("computer", "internet", 7.58), ("plane", "car", 5.77), ("train", "car", 6.31),
    ("telephone", "communication", 7.50), ("television", "radio", 6.77), ("drug", "abuse", 6.85),
    ("bread", "butter", 6.19), ("cucumber", "potato", 5.92), ("doctor", "nurse", 7.00),
    ("professor", "doctor", 6.62), ("student", "professor", 6.81), ("smart", "stupid", 5.81),
    ("company", "stock", 7.08), ("stock", "market", 8.08), ("stock", "phone", 1.62),
    ("stock", "jaguar", 0.92), ("stock", "egg", 1.81), ("fertility", "egg", 6.69),
    ("money", "cash", 9.15), ("professor", "cucumber", 0.31), ("king", "cabbage", 0.23),
    ("king", "queen", 8.58), ("bank", "money", 8.12), ("wood", "forest", 7.73),
]
# source name -> (module whose docstrings make the split, number of queries)
RETRIEVAL = {"python_code": (math, 12), "shell_utils": (shutil, 8)}


def _docstrings(module: ModuleType) -> list[tuple[str, str]]:
    """(qualified name, first docstring paragraph) of a module's public callables."""
    out = []
    for name, obj in sorted(vars(module).items()):
        doc = inspect.getdoc(obj) if callable(obj) and not name.startswith("_") else None
        if doc:
            out.append((f"{module.__name__}.{name}".replace("_", " "), doc.split("\n\n")[0].replace("\n", " ")))
    return out


def write_corpus(root: Path) -> Path:
    """A small built corpus at ``root`` (the layout of ``boom-merge data build``)."""
    sources = {name: {"domain": "code", "task": "retrieval", "licence": "PSF"} for name in RETRIEVAL}
    sources["wordsim353"] = {"domain": "general", "task": "sts", "licence": "not specified"}
    root.mkdir(parents=True)
    (root / "manifest.json").write_text(json.dumps({"seed": 0, "sources": sources, "missing": {}}))
    for name, (module, n_queries) in RETRIEVAL.items():
        test = root / "test" / name
        (test / "qrels").mkdir(parents=True)
        items = _docstrings(module)
        with (test / "queries.jsonl").open("w") as queries, (test / "corpus.jsonl").open("w") as corpus:
            for i, (query, doc) in enumerate(items):
                if i < n_queries:
                    queries.write(json.dumps({"_id": f"q{i}", "text": query}) + "\n")
                corpus.write(json.dumps({"_id": f"d{i}", "title": "", "text": doc}) + "\n")
        qrels = "".join(f"q{i}\td{i}\t1\n" for i in range(n_queries))
        (test / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + qrels)
    (root / "sts").mkdir()
    rows = "".join(f"{a}\t{b}\t{s}\n" for a, b, s in WORDSIM)
    (root / "sts" / "wordsim353.tsv").write_text("word1\tword2\tscore\n" + rows)
    return root


def read_split(root: Path, name: str) -> tuple[dict[str, str], dict[str, str], dict[str, set[str]]]:
    """Queries, documents and qrels of a fixture split, read independently of the library."""
    test = root / "test" / name
    queries = {r["_id"]: r["text"] for r in map(json.loads, (test / "queries.jsonl").read_text().splitlines())}
    docs = {r["_id"]: r["text"] for r in map(json.loads, (test / "corpus.jsonl").read_text().splitlines())}
    qrels: dict[str, set[str]] = {}
    for line in (test / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        qid, did, _ = line.split("\t")
        qrels.setdefault(qid, set()).add(did)
    return queries, docs, qrels


def ndcg_at_10(model_path: str | Path, root: Path, name: str) -> float:
    """Brute-force cosine ranking of the whole corpus, binary-gain nDCG@10."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_path), device="cpu")
    queries, docs, qrels = read_split(root, name)
    doc_ids = list(docs)
    q = model.encode(list(queries.values()), normalize_embeddings=True)
    d = model.encode(list(docs.values()), normalize_embeddings=True)
    values = []
    for row, qid in zip(q @ d.T, queries):
        ranking = [doc_ids[i] for i in np.argsort(-row)[:10]]
        dcg = sum(1 / math.log2(rank + 2) for rank, did in enumerate(ranking) if did in qrels[qid])
        ideal = sum(1 / math.log2(rank + 2) for rank in range(min(10, len(qrels[qid]))))
        values.append(dcg / ideal)
    return float(np.mean(values))


def spearman(model_path: str | Path) -> float:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_path), device="cpu")
    a = model.encode([p[0] for p in WORDSIM], normalize_embeddings=True)
    b = model.encode([p[1] for p in WORDSIM], normalize_embeddings=True)
    return float(spearmanr(np.sum(a * b, axis=1), [p[2] for p in WORDSIM])[0])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus") / "corpus")


@pytest.fixture(scope="module")
def member(tiny_bert_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with a member file saying it was trained on python_code."""
    path = tmp_path_factory.mktemp("member") / "member"
    shutil.copytree(tiny_bert_base, path)
    manifest = {"datasets": {"python_code": {"ratio": 0.4}}, "base_model_id": "sentence-transformers/all-MiniLM-L6-v2"}
    (path / "boom_member.json").write_text(json.dumps(manifest))
    return path


@pytest.fixture(scope="module")
def evaluated(corpus: Path, member: Path, minilm_path: str, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("eval") / "out"
    summary = evaluate_models([member, minilm_path], out=out, corpus=corpus, progress=False, device="cpu")
    return summary, out


def test_scores_match_independent_computation(evaluated, corpus: Path, member: Path, minilm_path: str) -> None:
    summary, _ = evaluated
    label = {member: "member", minilm_path: Path(minilm_path).name}
    assert summary.models == list(label.values())
    for path, model in label.items():
        assert summary.scores[model]["BoomPythonCodeRetrieval"] == pytest.approx(
            ndcg_at_10(path, corpus, "python_code"), abs=2e-3
        )
        assert summary.scores[model]["BoomShellUtilsRetrieval"] == pytest.approx(
            ndcg_at_10(path, corpus, "shell_utils"), abs=2e-3
        )
        assert summary.scores[model]["BoomWordSim353STS"] == pytest.approx(spearman(path), abs=2e-3)
    # the real model must beat a random tiny one on real text: the tasks are not garbage
    minilm = Path(minilm_path).name
    for task in summary.tasks:
        assert summary.scores[minilm][task] > summary.scores["member"][task] + 0.1


def test_results_are_leaderboard_ready(evaluated, corpus: Path, member: Path, minilm_path: str) -> None:
    import mteb
    from mteb.results import TaskResult
    from sentence_transformers import SentenceTransformer

    from boom_merge.evaluation.tasks import Caps, local_tasks

    summary, out = evaluated
    saved = json.loads((out / "summary.json").read_text())
    paths = {"member": member, Path(minilm_path).name: Path(minilm_path)}
    for model, path in paths.items():
        info = saved["model_meta"][model]
        assert info["revision"] == _content_hash(path)  # never a placeholder such as "local"
        folder = out / "local" / "results" / f"boom-merge__{model}" / info["revision"]
        assert info["result_dirs"] == [folder.relative_to(out).as_posix()]
        meta = json.loads((folder / "model_meta.json").read_text())
        st = SentenceTransformer(str(path), device="cpu")
        assert meta["name"] == info["name"] == f"boom-merge/{model}"
        assert meta["revision"] == info["revision"]
        assert meta["n_parameters"] == sum(p.numel() for p in st.parameters())
        assert (meta["embed_dim"], meta["max_tokens"]) == (st.get_embedding_dimension(), st.max_seq_length)
        for task in summary.tasks:
            result = TaskResult.from_disk(folder / f"{task}.json")
            assert result.task_name == task
            assert result.get_score() == pytest.approx(summary.scores[model][task], abs=1e-6)
    member_meta = json.loads((out / saved["model_meta"]["member"]["result_dirs"][0] / "model_meta.json").read_text())
    assert sorted(member_meta["training_datasets"]) == ["BoomPythonCodeRetrieval", "python_code"]
    assert member_meta["adapted_from"] == "sentence-transformers/all-MiniLM-L6-v2"  # from the member's lineage
    minilm_meta = json.loads((out / saved["model_meta"][Path(minilm_path).name]["result_dirs"][0] / "model_meta.json").read_text())
    assert minilm_meta["training_datasets"] is None and minilm_meta["license"] == "apache-2.0"  # its card says so
    # mteb's own loaders: the local cache validates against the local tasks; the main cache
    # (standard tasks only) validates against mteb's registry without tripping over local ones
    tasks = list(local_tasks(corpus, Caps()).values())
    loaded = mteb.ResultCache(out / "local").load_results(tasks=tasks, include_remote=False, validate_and_filter=True)
    scores = {(m.model_name, t.task_name): t.get_score() for m in loaded.model_results for t in m.task_results}
    assert scores == {
        (f"boom-merge/{m}", t): pytest.approx(summary.scores[m][t], abs=1e-6) for m in summary.models for t in summary.tasks
    }
    assert mteb.ResultCache(out).load_results(include_remote=False, validate_and_filter=True).model_results == []


def _content_hash(model_dir: Path) -> str:
    """sha256 over relative paths and contents of the non-hidden files (lineage.model_sha256's rule)."""
    digest = hashlib.sha256()
    for file in sorted(p for p in model_dir.rglob("*") if p.is_file() and not p.name.startswith(".")):
        digest.update(f"{file.relative_to(model_dir).as_posix()}\n".encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def test_summary_files_and_tagging(evaluated, minilm_path: str) -> None:
    summary, out = evaluated
    minilm = Path(minilm_path).name
    assert summary.in_domain == {"member": frozenset({"BoomPythonCodeRetrieval"}), minilm: None}
    assert summary.tagging == {"member": "python_code", minilm: "unknown: all OOD"}  # the lineage's names
    data = json.loads((out / "summary.json").read_text())
    assert data["in_domain"] == {"member": ["BoomPythonCodeRetrieval"], minilm: None}
    member_scores = summary.scores["member"]
    ood = [member_scores["BoomShellUtilsRetrieval"], member_scores["BoomWordSim353STS"]]
    assert data["averages"]["member"][ID_AVG] == pytest.approx(member_scores["BoomPythonCodeRetrieval"])
    assert data["averages"]["member"][OOD_AVG] == pytest.approx(sum(ood) / 2)
    assert data["averages"][minilm][ID_AVG] is None  # unknown lineage: everything is OOD-unknown
    markdown = (out / "summary.md").read_text()
    assert f"**{summary.scores[minilm]['BoomWordSim353STS']:.4f}**" in markdown
    assert f"Training data unknown for {minilm}" in markdown
    png = (out / "scores.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000
    # what the card reads: task -> source, kind, MTEB type, metric, split, caps (the facts, not guesses)
    assert data["split"] == "test"
    records = {task["name"]: task for task in data["tasks"]}
    assert summary.sources == {"BoomPythonCodeRetrieval": "python_code", "BoomShellUtilsRetrieval": "shell_utils",
                               "BoomWordSim353STS": "wordsim353"}
    code, sts = records["BoomPythonCodeRetrieval"], records["BoomWordSim353STS"]
    assert (code["source"], code["kind"], code["type"], code["hf_task_type"], code["main_score"], code["split"]) == (
        "python_code", "local", "Retrieval", "text-retrieval", "ndcg_at_10", "test")
    assert (sts["type"], sts["hf_task_type"], sts["main_score"]) == ("STS", "sentence-similarity", "cosine_spearman")
    assert code["caps"] is None  # uncapped run
    assert code["license"] == "https://docs.python.org/3/license.html"  # the registry entry's, not the manifest's "PSF"
    assert code["domains"] == ["Programming"] and records["BoomShellUtilsRetrieval"]["license"] == "not specified"
    assert summary.source_scores("member")["python_code"] == summary.scores["member"]["BoomPythonCodeRetrieval"]


def _summary(in_domain: dict[str, frozenset[str] | None]) -> Summary:
    return Summary(
        models=["a", "b"],
        tasks=["T1", "T2", "T3"],
        main_scores={"T1": "ndcg_at_10", "T2": "ndcg_at_10", "T3": "cosine_spearman"},
        scores={"a": {"T1": 0.5, "T2": 0.2, "T3": 0.4}, "b": {"T1": 0.3, "T2": 0.6, "T3": 0.4}},
        in_domain=in_domain,
    )


def test_summary_marks_best_per_column() -> None:
    summary = _summary({"a": frozenset({"T1"}), "b": frozenset({"T2", "T3"})})
    assert summary.value("a", ID_AVG) == pytest.approx(0.5)
    assert summary.value("a", OOD_AVG) == pytest.approx(0.3)
    assert summary.value("b", ID_AVG) == pytest.approx(0.5)
    assert summary.value("b", OOD_AVG) == pytest.approx(0.3)
    assert summary.best("T1") == {"a"} and summary.best("T2") == {"b"}
    assert summary.best("T3") == {"a", "b"}  # ties are all best
    rows = {line.split(" | ")[0].strip("| "): line for line in to_markdown(summary).splitlines()[2:4]}
    assert "**0.5000** (ID)" in rows["a"] and "| 0.2000 |" in rows["a"]
    assert "| 0.3000 |" in rows["b"] and "**0.6000** (ID)" in rows["b"]
    text_rows = {line.split()[0]: line for line in to_text(summary).splitlines()[2:4]}
    assert "0.5000* (ID)" in text_rows["a"] and "0.6000* (ID)" in text_rows["b"]
    assert "Training data unknown" not in to_markdown(summary)


def test_training_datasets_from_member_lineage_and_history(tmp_path: Path) -> None:
    member = tmp_path / "m1"
    member.mkdir()
    (member / "boom_member.json").write_text(json.dumps({"datasets": {"wordnet": {}, "foldoc": {}}}))
    update = tmp_path / "upd"
    update.mkdir()
    update_manifest = {  # the shape training.py writes for update models
        "kind": "update",
        "new_data": {"path": "/data/new", "datasets": {"devil": {"lines": 10}}},
        "history": {"path": "/data/old", "history_ratio": 0.1, "datasets": {"manpages": {"lines": 3}}},
    }
    (update / "boom_member.json").write_text(json.dumps(update_manifest))
    merged = tmp_path / "merged"
    (merged / "boom_members").mkdir(parents=True)
    shutil.copy(member / "boom_member.json", merged / "boom_members" / "m1.json")
    inputs = [  # the shapes lineage.py writes: a copied manifest, a path, known datasets
        {"path": "/gone/m1", "role": "member", "manifest": "boom_members/m1.json"},
        {"path": str(update), "role": "update"},
        {"path": "/gone/base", "role": "base", "datasets": []},
        {"path": "/gone/m3", "role": "member", "datasets": ["python_faq"]},
    ]
    (merged / "boom_lineage.json").write_text(json.dumps({"inputs": inputs}))
    assert training_datasets(member) == {"wordnet", "foldoc"}
    assert training_datasets(update) == {"devil", "manpages"}
    assert training_datasets(merged) == {"wordnet", "foldoc", "devil", "manpages", "python_faq"}
    assert training_datasets(tmp_path) is None  # no files: unknown
    (merged / "boom_lineage.json").write_text(json.dumps({"inputs": [{"path": "/gone/m4", "role": "member"}]}))
    assert training_datasets(merged) is None  # an unreadable input makes the whole model unknown


def test_in_domain_override_and_cli(corpus: Path, tiny_bert_base: Path, tmp_path: Path) -> None:
    from boom_merge.cli import main

    out = tmp_path / "out"
    args = ["eval", str(tiny_bert_base), str(tiny_bert_base), "--corpus", str(corpus), "--out", str(out)]
    args += ["--tasks", "shell_utils,BoomWordSim353STS", "--in-domain", "shell_utils", "--max-queries", "3"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    data = json.loads((out / "summary.json").read_text())
    assert data["models"] == ["base", "base-2"]
    assert data["in_domain"]["base"] == ["BoomShellUtilsRetrieval"]
    assert "0." in result.output and "*" in result.output
    folder = out / data["model_meta"]["base"]["result_dirs"][0]
    task = json.loads((folder / "BoomShellUtilsRetrieval.json").read_text())
    assert task["dataset_revision"].endswith("-q3")
    records = {task["name"]: task for task in data["tasks"]}
    assert records["BoomShellUtilsRetrieval"]["caps"] == {"max_queries": 3, "max_corpus": None}
    assert records["BoomWordSim353STS"]["caps"] is None  # caps cut retrieval tasks only: the STS score is whole
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 1 and again.output.startswith("Error: ") and "--force" in again.output
    # a corpus source not evaluated here is a name (it tags nothing); a typo is refused before any work
    other = CliRunner().invoke(main, [*args[:6], str(tmp_path / "other"), *args[7:10], "shell_utils,python_code",
                                      *args[11:]])
    assert other.exit_code == 0, other.output
    typo = [*args[:6], str(tmp_path / "typo"), *args[7:10], "shell_utils,shel_utils,zzz", *args[11:]]
    refused = CliRunner().invoke(main, typo)
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert refused.output.splitlines()[-1] == \
        "Error: --in-domain shel_utils, zzz: no evaluated task or corpus source of that name", refused.output
    assert not (tmp_path / "typo").exists()


def test_capped_corpus_keeps_relevant_documents(corpus: Path) -> None:
    from boom_merge.evaluation.corpus import read_retrieval

    split = read_retrieval(corpus, "python_code", max_queries=5, max_corpus=7)
    assert list(split.queries) == [f"q{i}" for i in range(5)]
    assert {f"d{i}" for i in range(5)} <= split.corpus.keys() and len(split.corpus) == 7
    split = read_retrieval(corpus, "python_code", max_queries=5, max_corpus=2)
    assert split.corpus.keys() == {f"d{i}" for i in range(5)}


def test_bad_inputs_are_one_line_errors(corpus: Path, tiny_bert_base: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(corpus, broken)
    (broken / "test" / "python_code" / "queries.jsonl").write_text('{"_id": "q0", "text": "x"}\nnot json\n')
    with pytest.raises(BoomError, match=r"queries\.jsonl: line 2: invalid JSON"):
        evaluate_models([tiny_bert_base], tmp_path / "o1", corpus=broken)
    assert not (tmp_path / "o1").exists()
    for name in ("queries.jsonl", "corpus.jsonl", "qrels/test.tsv"):  # not UTF-8: the file named, not MTEB
        shutil.rmtree(broken)
        shutil.copytree(corpus, broken)
        with (broken / "test" / "python_code" / name).open("ab") as handle:
            handle.write(b"\xff\xfe\n")
        with pytest.raises(BoomError, match=f"^{re.escape(str(broken / 'test' / 'python_code' / name))}: "
                                            r"not UTF-8 text \(invalid byte 0xff\)$"):
            evaluate_models([tiny_bert_base], tmp_path / "o1", corpus=broken)
        assert not (tmp_path / "o1").exists()
    with pytest.raises(BoomError, match="unknown task 'NoSuchTask'"):
        evaluate_models([tiny_bert_base], tmp_path / "o2", corpus=corpus, tasks=["NoSuchTask"])
    with pytest.raises(BoomError, match="MTEB task STS12: data cannot be loaded"):
        evaluate_models([tiny_bert_base], tmp_path / "o3", corpus=corpus, tasks=["STS12"])
    (tmp_path / "not-st").mkdir()
    with pytest.raises(BoomError, match="no modules.json"):
        evaluate_models([tmp_path / "not-st"], tmp_path / "o4", corpus=corpus)
    with pytest.raises(BoomError, match="lies inside the input"):  # OUT inside a model: refused before anything
        evaluate_models([tiny_bert_base], tiny_bert_base / "eval", corpus=corpus)
    with pytest.raises(BoomError, match="no manifest.json"):
        evaluate_models([tiny_bert_base], tmp_path / "o5", corpus=tmp_path)


def test_scores_chart_draws_differences_from_bls(tmp_path: Path) -> None:
    """scores.png shows each model minus BLS per task and average (points x100), not bars from 0."""
    from boom_merge.evaluation.summary import Summary, differences, plot_scores

    tasks = ["A", "B", "C"]
    models = ["base", "BLS", "BOOM"]
    scores = {"base": {"A": 0.50, "B": 0.60, "C": 0.70}, "BLS": {"A": 0.60, "B": 0.62, "C": 0.69},
              "BOOM": {"A": 0.605, "B": 0.618, "C": 0.702}}
    summary = Summary(models, tasks, {t: "ndcg_at_10" for t in tasks}, scores, {m: frozenset({"A", "B"}) for m in models})
    gaps = differences(summary)
    assert set(gaps) == {"base", "BOOM"}
    assert gaps["BOOM"] == pytest.approx({"A": 0.5, "B": -0.2, "C": 1.2, ID_AVG: 0.15, OOD_AVG: 1.2})
    assert gaps["base"]["A"] == pytest.approx(-10.0)
    assert differences(summary, "base")["BLS"]["C"] == pytest.approx(-1.0)
    plot_scores(summary, tmp_path / "scores.png")
    assert (tmp_path / "scores.png").read_bytes().startswith(b"\x89PNG")
