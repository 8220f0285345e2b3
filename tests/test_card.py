"""Model cards: real merges, a real trained member and an incremental update, read back with
huggingface_hub's parsers and sentence-transformers; Hub bases from an ``hf download`` cache."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard, constants
from huggingface_hub.repocard import metadata_load
from huggingface_hub.repocard_data import model_index_to_eval_results
from sentence_transformers import SentenceTransformer

from boom_merge.card.build import build_model_card, write_model_card
from boom_merge.card.body import BOOM_CITATION, START
from boom_merge.errors import BoomError
from boom_merge.incremental.update import incremental_merge
from boom_merge.merge.pipeline import merge_recipe
from boom_merge.training.manifest import base_record
from tests.tiny_models import make_tiny_bert_st

HUB_ID = "someorg/tiny-base"
REV = "89abcdef0123456789abcdef0123456789abcdef"
RATIOS = (0.4, 0.8)


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory: pytest.TempPathFactory, tiny_bert_base: Path, minilm_path: str) -> Iterator[Path]:
    """``HUB_ID`` in a Hugging Face cache as ``hf download`` leaves it, with MiniLM's licence."""
    cache = tmp_path_factory.mktemp("hf") / "hub"
    repo = cache / f"models--{HUB_ID.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REV)
    snapshot = repo / "snapshots" / REV
    shutil.copytree(tiny_bert_base, snapshot)
    shutil.copy(Path(minilm_path) / "README.md", snapshot / "README.md")  # licence: apache-2.0
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(constants, "HF_HUB_CACHE", str(cache))
        yield snapshot


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CORPUS/{train/wordnet.jsonl, manifest.json}: the corpus manifest carries the licence."""
    root = tmp_path_factory.mktemp("corpus")
    (root / "train").mkdir()
    rows = [{"query": f"word {i}", "pos": [f"the meaning of word {i}"], "neg": [f"an unrelated text {i}"]} for i in range(12)]
    (root / "train" / "wordnet.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    sources = {"wordnet": {"task": "retrieval", "domain": "dictionary", "licence": "WordNet-3.0"}}
    (root / "manifest.json").write_text(json.dumps({"sources": sources}))
    return root / "train"


def _members(root: Path, base: Path, base_spec: str | None, corpus: Path) -> list[Path]:
    """Two tiny members whose manifests record ``base_spec`` as :func:`base_record` does."""
    members = []
    for index, ratio in enumerate(RATIOS):
        path = make_tiny_bert_st(root / f"member-{index}", seed=index + 1, perturb_from=base)
        identity = base_record(base_spec) if base_spec else {"base_model": None}
        manifest = {"kind": "member", "member_index": index, "sample_ratio": ratio, "seed": 100 + index,
                    "data": str(corpus), "training_args": {"batch_size": 4, "temperature": 0.05},
                    "datasets": {"wordnet": {"available": 12, "sampled": int(12 * ratio)}}, **identity}
        (path / "boom_member.json").write_text(json.dumps(manifest))
        members.append(path)
    return members


def _merge(root: Path, members: list[Path], base: Path | None = None) -> Path:
    recipe = {"merge_method": "boom", "models": [{"model": str(m), "parameters": {"weight": r}} for m, r in zip(members, RATIOS)]}
    if base is not None:
        recipe["base_model"] = str(base)
    (root / "boom.yml").write_text(yaml.safe_dump(recipe))
    return merge_recipe(root / "boom.yml", root / "boom-tiny")


@pytest.fixture(scope="module")
def merged(tmp_path_factory: pytest.TempPathFactory, hub_cache: Path, corpus: Path) -> Path:
    """A merge (no base) of two members trained from the Hub id."""
    root = tmp_path_factory.mktemp("merge")
    return _merge(root, _members(root, hub_cache, HUB_ID, corpus))


def _meta(path: Path) -> dict:
    return metadata_load(path / "README.md")


def test_merge_card_metadata_and_sentence_transformers_sections(merged: Path) -> None:
    meta = _meta(merged)
    assert meta["base_model"] == [HUB_ID] and meta["base_model_relation"] == "merge"
    assert meta["library_name"] == "sentence-transformers" and meta["pipeline_tag"] == "sentence-similarity"
    assert {"merge", "mergekit", "boom-merge", "sentence-transformers"} <= set(meta["tags"])
    assert "boom-member" not in meta["tags"]
    assert meta["license"] == "apache-2.0"  # the Hub base's card, from the cache
    text = (merged / "README.md").read_text()
    assert text.split("\n# ", 1)[1].startswith("boom-tiny\n")  # the final name, never a temp dir's
    assert 'SentenceTransformer("boom-tiny")' in text and ".tmp" not in text
    model = SentenceTransformer(str(merged), device="cpu")
    assert f"**Output Dimensionality:** {model.get_embedding_dimension()} dimensions" in text
    assert f"**Maximum Sequence Length:** {model.max_seq_length} tokens" in text
    assert "**Similarity Function:** Cosine Similarity" in text and "BertModel" in text  # architecture
    assert "* Size: 12 training samples" in text and "MultipleNegativesRankingLoss" in text
    assert '"scale": 20.0' in text  # 1 / temperature, from the members' training args
    assert "- `batch_size`: 4" in text and "### Framework Versions" in text
    assert BOOM_CITATION in text and "@inproceedings{reimers-2019-sentence-bert" in text
    for index, ratio in enumerate(RATIOS):
        assert f"| member-{index} | member | {ratio} | {100 + index} | wordnet: {int(12 * ratio)} / 12 |" in text
    assert "- wordnet: WordNet-3.0" in text  # from the corpus manifest
    assert text.index(START) < text.index("## Citation")
    lineage = json.loads((merged / "boom_lineage.json").read_text())
    for record in lineage["inputs"]:
        assert f"| {Path(record['path']).name} | member | {record['weight']} | from {HUB_ID} | wordnet |" in text


def test_card_reads_back_through_sentence_transformers(merged: Path, tmp_path: Path) -> None:
    text = (merged / "README.md").read_text()
    card = ModelCard.load(merged / "README.md")
    assert card.data.base_model == [HUB_ID] and card.data.to_dict()["base_model_relation"] == "merge"
    model = SentenceTransformer(str(merged), device="cpu")
    assert model._model_card_text == text  # what sentence-transformers reads as this model's card
    model.save(str(tmp_path / "saved"))  # an untrained model keeps its card
    assert _meta(tmp_path / "saved") == _meta(merged)
    assert model.model_card_data.__class__.__name__ == "SentenceTransformerModelCardData"


def test_title_on_push_and_rebuild_replaces_boom_sections(merged: Path) -> None:
    card = build_model_card(merged, title="user/boom-tiny")
    assert 'SentenceTransformer("user/boom-tiny")' in card.text and 'SentenceTransformer("boom-tiny")' not in card.text
    assert card.text.splitlines().count("# user/boom-tiny") == 1 and "# boom-tiny" not in card.text.splitlines()
    assert card.text.count(START) == 1
    assert card.data.to_dict().get("model-index") is None


def test_merge_with_a_hub_base_and_without_hub_ids(tmp_path: Path, hub_cache: Path, tiny_bert_base: Path, corpus: Path) -> None:
    with_base = _merge(tmp_path / "a", _members(tmp_path / "a", hub_cache, HUB_ID, corpus), base=hub_cache)
    meta = _meta(with_base)
    assert meta["base_model"] == [HUB_ID] and meta["base_model_relation"] == "merge"  # one id, once
    record = json.loads((with_base / "boom_lineage.json").read_text())["inputs"][-1]
    assert (record["role"], record["hub_id"], record["revision"]) == ("base", HUB_ID, REV)
    text = (with_base / "README.md").read_text()
    recipe = text.index("### Recipe"), text.index("### Lineage")  # the recipe as written names what the user gave
    assert record["path"] == HUB_ID and str(hub_cache) not in text[: recipe[0]] + text[recipe[1]:]  # never a cache path

    local = _merge(tmp_path / "b", _members(tmp_path / "b", tiny_bert_base, str(tiny_bert_base), corpus))
    meta = _meta(local)
    assert "base_model" not in meta and "base_model_relation" not in meta  # no Hub id known: none invented
    assert "merge" in meta["tags"] and "boom-tiny" in (local / "README.md").read_text()


@pytest.fixture(scope="module")
def trained_member(tmp_path_factory: pytest.TempPathFactory, hub_cache: Path, corpus: Path) -> Path:
    """A member really trained (2 steps) from the Hub id: its card was written by sentence-transformers."""
    from boom_merge.data.sampling import plan_members
    from boom_merge.training import TrainConfig, train_member

    out = tmp_path_factory.mktemp("trained")
    spec = plan_members("50", seed=5)[0]
    return train_member(corpus, HUB_ID, spec, out, TrainConfig(batch_size=4, max_steps=2, save_steps=10))


def test_trained_member_keeps_its_sentence_transformers_card(trained_member: Path) -> None:
    original = (trained_member / "README.md").read_text()
    manifest = json.loads((trained_member / "boom_member.json").read_text())
    assert (manifest["base_model"], manifest["base_model_id"], manifest["base_model_revision"]) == (HUB_ID, HUB_ID, REV)
    card = build_model_card(trained_member, title="user/member-0")
    meta = card.data.to_dict()
    assert meta["base_model"] == HUB_ID and meta["base_model_relation"] == "finetune"
    assert "merge" not in meta["tags"] and "mergekit" not in meta["tags"] and "boom-member" in meta["tags"]
    assert set(metadata_load(trained_member / "README.md")["tags"]) - {"merge"} <= set(meta["tags"])  # ST's kept
    assert 'SentenceTransformer("user/member-0")' in card.text and "\n# user/member-0\n" in card.text
    for section in ("## Training Details", "### Training Hyperparameters", "### Framework Versions", "## Citation"):
        assert section in original and section in card.text  # nothing of sentence-transformers' card lost
    assert len(card.text) > len(original) and BOOM_CITATION in card.text
    assert f"| {trained_member.name} | member | 0.5 | 5 | wordnet: 6 / 12 |" in card.text
    (trained_member / "README.md").write_text(str(card))  # a card already extended is extended once
    again = build_model_card(trained_member, title="user/member-0")
    assert again.text.count(START) == 1 and again.text.count(BOOM_CITATION) == 1
    (trained_member / "README.md").write_text(original)


def test_incremental_update_card(tmp_path: Path, merged: Path, trained_member: Path) -> None:
    update = tmp_path / "update"
    shutil.copytree(trained_member, update)
    out = incremental_merge(merged, update, tmp_path / "boom-tiny-v2", update_weight=0.25).path
    meta = _meta(out)
    assert meta["base_model"] == [HUB_ID] and meta["base_model_relation"] == "merge"
    assert {"merge", "boom-incremental"} <= set(meta["tags"]) and "boom-member" not in meta["tags"]
    text = (out / "README.md").read_text()
    assert 'SentenceTransformer("boom-tiny-v2")' in text and "an incremental BOOM update" in text
    line = next(line for line in text.splitlines() if line.startswith("- incremental update"))
    assert "update weight 0.25" in line and f"old `{merged.name}`" in line and "update `update`" in line
    assert str(tmp_path) not in text and str(merged.parent) not in text and "/tmp" not in text  # push uploads it
    assert "- first model: a merge (boom)" in text


def _summary(root: Path, models: dict[str, Path], capped: bool) -> Path:
    """An ``eval --out`` summary.json in the shape evaluation writes (tasks carry their facts)."""
    tasks = [
        {"name": "BoomWordnetRetrieval", "source": "wordnet", "kind": "local", "type": "Retrieval",
         "hf_task_type": "text-retrieval", "main_score": "ndcg_at_10", "split": "test",
         "caps": {"max_queries": 100, "max_corpus": None} if capped else None,
         "dataset": {"path": "boom-merge/wordnet", "revision": "c0ffee"}},
        {"name": "STSBenchmark", "source": "STSBenchmark", "kind": "mteb", "type": "STS",
         "hf_task_type": "sentence-similarity", "main_score": "cosine_spearman", "split": "test", "caps": None,
         "dataset": {"path": "mteb/stsbenchmark-sts", "revision": "b0fddb56ed78048fa8b90373c8a3cfc37b684831"}},
    ]
    scores = {label: {"BoomWordnetRetrieval": 0.5 + i / 10, "STSBenchmark": 0.8 - i / 10} for i, label in enumerate(models)}
    root.mkdir(parents=True, exist_ok=True)
    (root / "summary.json").write_text(json.dumps(
        {"models": list(models), "tasks": tasks, "scores": scores, "model_paths": {k: str(v) for k, v in models.items()}}
    ))
    return root


@pytest.mark.parametrize("include_capped", [False, True])
def test_model_index_from_evaluation_facts(merged: Path, tmp_path: Path, include_capped: bool) -> None:
    results = _summary(tmp_path / "eval", {"other": tmp_path, "boom-tiny": merged}, capped=True)
    card = build_model_card(merged, title="user/boom-tiny", results_dir=results, include_capped=include_capped)
    name, evals = model_index_to_eval_results(card.data.to_dict()["model-index"])
    assert name == "user/boom-tiny"
    found = {e.task_name: (e.task_type, e.metric_type, e.metric_value, e.dataset_type) for e in evals}
    assert found["STSBenchmark"] == ("sentence-similarity", "cosine_spearman", pytest.approx(0.7), "mteb/stsbenchmark-sts")
    if include_capped:
        assert found["BoomWordnetRetrieval"] == ("text-retrieval", "ndcg_at_10", pytest.approx(0.6), "boom-merge/wordnet")
        assert "capped" in next(e.dataset_name for e in evals if e.task_name == "BoomWordnetRetrieval")
    else:
        assert "BoomWordnetRetrieval" not in found
    row = next(line for line in card.text.splitlines() if line.startswith("| BoomWordnetRetrieval |"))
    assert "| ndcg_at_10 | 0.6000 | capped: max_queries=100 |" in row  # shown, and marked


def test_uncapped_retrieval_goes_into_model_index(merged: Path, tmp_path: Path) -> None:
    results = _summary(tmp_path / "eval", {"boom-tiny": merged}, capped=False)
    _, evals = model_index_to_eval_results(build_model_card(merged, results_dir=results).data.to_dict()["model-index"])
    assert {e.task_name: e.metric_type for e in evals} == {"BoomWordnetRetrieval": "ndcg_at_10", "STSBenchmark": "cosine_spearman"}


def test_bad_inputs_are_one_line(merged: Path, tmp_path: Path) -> None:
    old = tmp_path / "old-eval"
    _summary(old, {"boom-tiny": merged}, capped=False)
    data = json.loads((old / "summary.json").read_text())
    for task in data["tasks"]:
        del task["hf_task_type"]
    (old / "summary.json").write_text(json.dumps(data))
    with pytest.raises(BoomError, match=r"summary\.json: task 'BoomWordnetRetrieval' lacks hf_task_type"):
        build_model_card(merged, results_dir=old)
    with pytest.raises(BoomError, match="no summary.json"):
        build_model_card(merged, results_dir=tmp_path)
    several = _summary(tmp_path / "several", {"a": tmp_path / "a", "b": tmp_path / "b"}, capped=False)
    with pytest.raises(BoomError, match=r"results of several models \(a, b\) and none is this model's"):
        build_model_card(merged, results_dir=several)
    member = tmp_path / "member"
    member.mkdir()
    (member / "boom_member.json").write_text("{not json")
    with pytest.raises(BoomError, match=rf"^{member / 'boom_member.json'}: corrupt provenance file"):
        write_model_card(member)
    assert not (member / "README.md").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(BoomError, match="cannot tell what the model is made from"):
        build_model_card(tmp_path / "empty")


def test_card_from_a_real_evaluation(merged: Path, tmp_path: Path) -> None:
    """``boom-merge eval`` output as evaluation writes it: metric and task type from the tasks, caps honoured."""
    from boom_merge.evaluation import evaluate_models
    from tests.test_evaluation import write_corpus

    corpus = write_corpus(tmp_path / "corpus")
    evaluate_models([merged], tmp_path / "eval", corpus=corpus, max_queries=3, progress=False, device="cpu")
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    capped = {t["name"] for t in summary["tasks"] if t["caps"]}
    assert "BoomPythonCodeRetrieval" in capped  # --max-queries caps the local retrieval tasks
    for include in (False, True):
        card = build_model_card(merged, results_dir=tmp_path / "eval", include_capped=include)
        index = card.data.to_dict().get("model-index")
        evals = model_index_to_eval_results(index)[1] if index else []
        found = {e.task_name: (e.metric_type, e.task_type, e.metric_value) for e in evals}
        expected = {t["name"]: (t["main_score"], t["hf_task_type"], pytest.approx(summary["scores"]["boom-tiny"][t["name"]]))
                    for t in summary["tasks"] if include or not t["caps"]}
        assert found == expected
        assert {found[name][0] for name in capped if include} <= {"ndcg_at_10"}


def test_no_absolute_local_path_in_a_merged_card(merged: Path) -> None:
    """The card is what push uploads: members and inputs by dir name (and Hub id), never a local path."""
    text = (merged / "README.md").read_text()
    root = str(merged.parent)
    assert root not in text and "/tmp" not in text and str(Path(root).resolve()) not in text, text
    assert re.search(r"^\| member-0 \|", text, flags=re.M), text  # the member table names the dir
    assert "member-1" in text.partition("### Lineage")[2]  # the lineage names the inputs


@pytest.mark.parametrize("with_dense", [False, True])
def test_the_card_reads_no_weights(merged: Path, tiny_bag: tuple[Path, list[Path]], tmp_path: Path, with_dense: bool) -> None:
    """The card comes from the model's structure: with every weight file made unreadable it is the same card."""
    if with_dense:
        (tmp_path / "bag.yml").write_text(yaml.safe_dump({"merge_method": "boom", "models": [{"model": str(m)} for m in tiny_bag[1][:2]]}))
        model = merge_recipe(tmp_path / "bag.yml", tmp_path / "bag")
    else:
        model = merged
    expected = build_model_card(model).text
    blind = tmp_path / "blind" / model.name
    shutil.copytree(model, blind)
    weights = sorted(blind.rglob("*.safetensors"))
    assert len(weights) == (2 if with_dense else 1)  # the transformer's and the Dense layer's
    for path in weights:
        path.write_bytes(b"not weights: any read of them fails")
    assert build_model_card(blind).text == expected
    if with_dense:
        assert "Dense({'in_features': 32, 'out_features': 16" in expected
