"""Model cards: built from a real mergekit merge, checked with huggingface_hub's parsers."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import mteb
import pytest
import yaml
from huggingface_hub import ModelCard
from huggingface_hub.repocard import metadata_load
from huggingface_hub.repocard_data import model_index_to_eval_results
from mteb import TaskResult

from boom_merge.card import build_model_card, common_licence, hub_id, mteb_eval_results, write_model_card
from boom_merge.errors import BoomError
from tests.tiny_models import make_tiny_bert_st

RATIOS = {"m0": 0.4, "m1": 0.8}


def _member_manifest(index: int, ratio: float, base: str, data: str = "") -> dict:
    """A member manifest; wordnet carries its licence, foldoc's comes from the corpus manifest."""
    return {
        "kind": "member",
        "member_index": index,
        "sample_ratio": ratio,
        "seed": 100 + index,
        "base_model": base,
        "data": data,
        "datasets": {
            "wordnet": {"available": 1000, "sampled": int(1000 * ratio), "ids_sha256": "ab" * 32, "licence": "WordNet"},
            "foldoc": {"available": 200, "sampled": int(200 * ratio), "ids_sha256": "cd" * 32},
        },
    }


@pytest.fixture(scope="module")
def merged(tmp_path_factory: pytest.TempPathFactory, tiny_bert_base: Path, minilm_path: str) -> dict:
    """A real mergekit linear merge of two tiny members whose base licence is MiniLM's."""
    root = tmp_path_factory.mktemp("card")
    (root / "corpus" / "train").mkdir(parents=True)
    sources = {"foldoc": {"task": "retrieval", "licence": "GFDL 1.1 or later"}, "wordnet": {"licence": "ignored"}}
    (root / "corpus" / "manifest.json").write_text(json.dumps({"sources": sources}))
    members = []
    for index, name in enumerate(RATIOS):
        path = make_tiny_bert_st(root / name, seed=index + 1, perturb_from=tiny_bert_base)
        manifest = _member_manifest(index, RATIOS[name], minilm_path, str(root / "corpus" / "train"))
        (path / "boom_member.json").write_text(json.dumps(manifest))
        members.append(path)
    recipe = "merge_method: linear\nmodels:\n" + "".join(
        f"  - model: {path}\n    parameters:\n      weight: 0.5\n" for path in members
    ) + "dtype: float32\n"
    (root / "recipe.yml").write_text(recipe)
    out = root / "merged"
    subprocess.run(
        [sys.executable, "-m", "mergekit.scripts.run_yaml", str(root / "recipe.yml"), str(out)],
        check=True,
        capture_output=True,
    )
    (out / "boom_members").mkdir(exist_ok=True)  # boom-merge's mergekit hook copies them too
    for path in members:
        (out / "boom_members" / f"{path.name}.json").write_text((path / "boom_member.json").read_text())
    return {"dir": out, "members": members, "recipe": recipe}


SCORES = {"merged": (0.8123, 0.4567), "m0": (0.70, 0.30)}  # (STSBenchmark, BoomFoldocRetrieval)


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory: pytest.TempPathFactory, merged: dict) -> Path:
    """An ``eval --out`` folder for two models, written with mteb's own ResultCache and ModelMeta.

    Each model has a registry task and an unregistered local one (as ``boom-merge eval`` makes).
    """
    from mteb.models.sentence_transformer_wrapper import SentenceTransformerEncoderWrapper
    from sentence_transformers import SentenceTransformer

    out = tmp_path_factory.mktemp("eval")
    cache = mteb.ResultCache(out)
    paths = {"merged": merged["dir"], "m0": merged["members"][0]}
    for label, path in paths.items():
        wrapper = SentenceTransformerEncoderWrapper(SentenceTransformer(str(path), device="cpu"))
        meta = wrapper.mteb_model_meta.model_copy(update={"name": f"boom-merge/{label}", "revision": "local"})
        sts, local = SCORES[label]
        cache.save_to_cache(
            TaskResult.from_task_results(
                mteb.get_task("STSBenchmark"),
                {"test": {"default": {"main_score": sts, "cosine_spearman": sts, "euclidean_spearman": sts}}},
                evaluation_time=2.0,
            ),
            meta,
        )
        cache.save_to_cache(
            TaskResult(
                dataset_revision="local-1",
                task_name="BoomFoldocRetrieval",
                mteb_version=mteb.__version__,
                scores={"test": [{"main_score": local, "ndcg_at_10": local, "ndcg_at_5": local / 2,
                                  "hf_subset": "default", "languages": ["eng-Latn"]}]},
                evaluation_time=1.0,
            ),
            meta,
        )
    (out / "summary.json").write_text(json.dumps({"model_paths": {k: str(v) for k, v in paths.items()}}))
    return out


def _saved_main_scores(results_dir: Path, label: str) -> dict[str, float]:
    """Independent read of the raw JSON files of one model."""
    folder = next(p.parent for p in results_dir.rglob("model_meta.json") if label in json.loads(p.read_text())["name"])
    return {
        raw["task_name"]: raw["scores"]["test"][0]["main_score"]
        for raw in (json.loads(p.read_text()) for p in folder.glob("*.json") if p.name != "model_meta.json")
    }


def _yaml_block(text: str) -> dict:
    return yaml.safe_load(re.search(r"```yaml\n(.*?)```", text, re.S).group(1))


def test_merged_card_metadata_and_body(merged: dict, results_dir: Path) -> None:
    inputs = [str(path) for path in merged["members"]]
    path = write_model_card(merged["dir"], inputs=inputs, recipe_yaml=merged["recipe"], results_dir=results_dir)
    assert path == merged["dir"] / "README.md"
    text = path.read_text()

    card = ModelCard.load(path)
    meta = metadata_load(path)
    assert meta["library_name"] == "sentence-transformers"
    assert meta["pipeline_tag"] == "sentence-similarity"
    assert meta["base_model"] == ["m0", "m1"]
    assert meta["base_model_relation"] == "merge"
    assert meta["license"] == "apache-2.0"  # MiniLM's README, reached through boom_member.json
    assert {"sentence-transformers", "boom-merge", "mergekit", "merge"} <= set(meta["tags"])
    assert card.data.base_model == ["m0", "m1"]

    name, evals = model_index_to_eval_results(meta["model-index"])
    assert name == "merged"
    scores = {e.task_name: e.metric_value for e in evals}
    assert scores == pytest.approx(_saved_main_scores(results_dir, "merged"))
    assert scores == pytest.approx(dict(zip(["STSBenchmark", "BoomFoldocRetrieval"], SCORES["merged"])))
    sts = next(e for e in evals if e.task_name == "STSBenchmark")
    assert (sts.task_type, sts.metric_type, sts.dataset_type) == (
        "sentence-similarity",
        "cosine_spearman",
        "mteb/stsbenchmark-sts",
    )
    custom = next(e for e in evals if e.task_name == "BoomFoldocRetrieval")
    assert (custom.dataset_revision, custom.dataset_split) == ("local-1", "test")
    assert (custom.task_type, custom.metric_type) == ("text-retrieval", "ndcg_at_10")

    assert _yaml_block(card.text) == yaml.safe_load(merged["recipe"])
    assert 'SentenceTransformer("merged")' in card.text
    assert "`linear`" in card.text  # method read from the recipe
    for path_ in inputs:
        assert f"- `{path_}`" in text
    for member, ratio in RATIOS.items():
        row = next(line for line in text.splitlines() if line.startswith(f"| {member} |"))
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        manifest = _member_manifest(list(RATIOS).index(member), ratio, "")
        assert cells[:4] == [member, "member", str(ratio), str(manifest["seed"])]
        assert f"wordnet: {manifest['datasets']['wordnet']['sampled']} / 1000" in cells[4]
    assert "- foldoc: GFDL 1.1 or later" in text and "- wordnet: WordNet" in text
    lineage = json.loads((merged["dir"] / "boom_lineage.json").read_text())  # written by the merge hook
    for record in lineage["inputs"]:
        assert f"| {record['path']} | {record['role']} | {record.get('weight', '')} |" in text


def test_card_defaults_come_from_model_dir(merged: dict) -> None:
    """push builds the card from what mergekit saved (mergekit_config.yml)."""
    card = build_model_card(merged["dir"], model_id="user/boom-tiny")
    assert card.data.base_model == ["m0", "m1"]
    assert 'SentenceTransformer("user/boom-tiny")' in card.text
    saved = yaml.safe_load((merged["dir"] / "mergekit_config.yml").read_text())
    assert _yaml_block(card.text) == saved
    assert card.data.to_dict().get("model-index") is None


def test_member_card_is_finetune_of_its_base(merged: dict, minilm_path: str) -> None:
    member = merged["members"][1]
    card = build_model_card(member)
    assert card.data.base_model == [hub_id(minilm_path)]
    assert card.data.base_model_relation == "finetune"
    assert card.data.license == "apache-2.0"
    assert "| m1 | member | 0.8 | 101 |" in card.text


def test_lineage_section(tmp_path: Path) -> None:
    """An incremental update of a BOOM merge, as ``boom_lineage.json`` records it."""
    first = {
        "kind": "merge",
        "method": "boom",
        "created": "2026-11-01T10:00:00+00:00",
        "inputs": [{"path": "/m/member-0-r40", "role": "member", "weight": 0.4, "datasets": ["foldoc"]}],
    }
    lineage = {
        "kind": "incremental",
        "old": {"path": "/models/v1", "sha256": "1" * 64},
        "update": {"path": "/models/upd", "sha256": "2" * 64},
        "update_weight": 0.25,
        "interpolation": "slerp",
        "created": "2026-11-26T10:00:00+00:00",
        "old_lineage": first,
        "inputs": [
            {"path": "/models/v1", "role": "old", "datasets": ["foldoc"]},
            {"path": "/models/upd", "role": "update", "datasets": ["foldoc", "wordnet"]},
        ],
    }
    model = tmp_path / "v2"
    model.mkdir()
    (model / "boom_lineage.json").write_text(json.dumps(lineage))
    card = build_model_card(model, inputs=["/models/v1", "/models/upd"], method="boom_incremental")
    assert card.data.base_model == ["/models/v1", "/models/upd"]  # not on disk: kept as given
    assert "| /models/upd | update |  | foldoc, wordnet |" in card.text
    update_line = next(line for line in card.text.splitlines() if line.startswith("- incremental update"))
    assert "2026-11-26T10:00:00+00:00" in update_line and "slerp" in update_line and "weight 0.25" in update_line
    assert f"`/models/v1` (sha256 `{'1' * 64}`)" in update_line and f"(sha256 `{'2' * 64}`)" in update_line
    assert "- first model: a merge (boom), created 2026-11-01T10:00:00+00:00" in card.text


def test_hub_id_from_hf_cache_path(tmp_path: Path) -> None:
    snapshot = tmp_path / "models--sentence-transformers--all-MiniLM-L6-v2" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    assert hub_id(str(snapshot)) == "sentence-transformers/all-MiniLM-L6-v2"
    assert hub_id("BAAI/bge-small-en-v1.5") == "BAAI/bge-small-en-v1.5"
    assert hub_id(str(tmp_path)) == tmp_path.name


def test_licences_differ_gives_none(merged: dict, minilm_path: str, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "README.md").write_text("---\nlicense: mit\n---\n# other\n")
    assert common_licence([minilm_path, minilm_path]) == "apache-2.0"
    assert common_licence([minilm_path, str(other)]) is None


def test_update_model_licences_from_its_corpora(tmp_path: Path) -> None:
    """Update models name datasets new/NAME and history/NAME and record two data folders."""
    for corpus, licence in (("new", "cc0-1.0"), ("old", "PSF-2.0")):
        (tmp_path / corpus / "train").mkdir(parents=True)
        (tmp_path / corpus / "manifest.json").write_text(json.dumps({"sources": {"kjv": {"licence": licence}}}))
    (tmp_path / "old" / "manifest.json").write_text(json.dumps({"sources": {"python_faq": {"licence": "PSF-2.0"}}}))
    model = tmp_path / "update"
    model.mkdir()
    manifest = {
        "kind": "update",
        "base_model": "BAAI/bge-small-en-v1.5",
        "new_data": {"path": str(tmp_path / "new" / "train")},
        "history": {"path": str(tmp_path / "old" / "train")},
        "datasets": {"new/kjv": {"sampled": 10}, "history/python_faq": {"sampled": 2}},
    }
    (model / "boom_member.json").write_text(json.dumps(manifest))
    card = build_model_card(model)
    assert card.data.base_model == ["BAAI/bge-small-en-v1.5"]
    assert "- kjv: cc0-1.0" in card.text and "- python_faq: PSF-2.0" in card.text


def test_bad_inputs_name_the_file(merged: dict, results_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "results"
    bad.mkdir()
    (bad / "STSBenchmark.json").write_text(json.dumps({"task_name": "STSBenchmark", "scores": "oops"}))
    with pytest.raises(BoomError, match=r"STSBenchmark\.json: not a valid MTEB result"):
        mteb_eval_results(bad)
    with pytest.raises(BoomError, match="no MTEB result files"):
        mteb_eval_results(_empty(tmp_path))
    model = tmp_path / "member"
    model.mkdir()
    (model / "boom_member.json").write_text("{not json")
    with pytest.raises(BoomError, match=r"boom_member\.json: cannot read JSON"):
        build_model_card(model)
    with pytest.raises(BoomError, match="cannot tell the model's inputs"):
        build_model_card(_empty(tmp_path))


def _empty(tmp_path: Path) -> Path:
    path = tmp_path / "empty"
    path.mkdir(exist_ok=True)
    return path


def test_results_of_one_model_are_picked(merged: dict, results_dir: Path, tmp_path: Path) -> None:
    evals = mteb_eval_results(results_dir, merged["members"][0])
    assert {e.task_name: e.metric_value for e in evals} == pytest.approx(_saved_main_scores(results_dir, "m0"))
    copy = tmp_path / "copy"
    shutil.copytree(results_dir, copy)
    (copy / "summary.json").unlink()
    with pytest.raises(BoomError, match="results of several models"):
        mteb_eval_results(copy, merged["dir"])


def test_local_sts_task_metric_and_type(tmp_path: Path) -> None:
    """A task outside mteb's registry: type from its name, metric = the score equal to main_score."""
    scores = {"main_score": 0.61, "cosine_spearman": 0.61, "euclidean_spearman": 0.61, "manhattan_spearman": 0.58}
    TaskResult(
        dataset_revision="r1",
        task_name="BoomWordSim353STS",
        mteb_version=mteb.__version__,
        scores={"test": [{**scores, "hf_subset": "default", "languages": ["eng-Latn"]}]},
        evaluation_time=1.0,
    ).to_disk(tmp_path / "BoomWordSim353STS.json")
    [result] = mteb_eval_results(tmp_path)
    assert (result.task_type, result.metric_type, result.metric_value) == ("sentence-similarity", "cosine_spearman", 0.61)
