"""The main job end to end on real corpora, with a tiny base so that it runs in a test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors.numpy import load_file
from sentence_transformers import SentenceTransformer

from boom_merge.errors import BoomError
from boom_merge.embedded_default import OOD_DEV_SOURCES
from boom_merge.quickstart import OOD_SOURCES, TRAIN_DOMAINS, Profile, run_quickstart
from tests.reference_merges import hand_merged_embeddings, np_multislerp
from tests.test_evaluation import ndcg_at_10

# eval_corpus above every test split's size: nothing is capped, so scores can be recomputed by brute force;
# tune's dev caps tiny and its scale grid {0.5, 1} (each candidate encodes 8 dev splits)
TINY = Profile(max_train=24, max_test_queries=8, eval_corpus=100_000, batch_size=8, max_seq_length=32,
               learning_rate=1e-3, tune_max_queries=8, tune_max_corpus=40, tune_scales=(0.5,))
TUNE_STAGE = "tune (balanced, dev splits only)"


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory, tiny_bert_base):
    out = tmp_path_factory.mktemp("qs") / "run"
    return run_quickstart(TINY, out, base_model=tiny_bert_base)


def test_layout_and_report(quickstart_run) -> None:
    out = quickstart_run.out
    members = sorted(p.name for p in (out / "members").iterdir() if p.is_dir())
    assert members == ["member-0-r40", "member-1-r60", "member-2-r80", "member-3-r100"]
    assert sorted(p.stem for p in (out / "data/train").glob("*.jsonl")) == sorted(TRAIN_DOMAINS)
    report = json.loads((out / "quickstart.json").read_text())
    assert set(report["timings_s"]) >= {"corpora", "train BLS + BOOM members", TUNE_STAGE, "total"}
    assert report["timings_s"][TUNE_STAGE] > 0
    assert (out / "eval/scores.png").stat().st_size > 10_000
    for name in ("recipe.yml", "candidates.md", "pareto.png", "model/config.json"):
        assert (out / "tune" / name).is_file()
    assert not any(p.name.endswith(".tune-work") for p in out.iterdir())  # tune's work dir is gone
    summary = quickstart_run.summary
    assert summary.models == ["base", "BLS", "BOOM", "BOOM tuned"]
    assert len(summary.tasks) == len(TRAIN_DOMAINS) + len(OOD_SOURCES)
    for model in summary.models:  # the four training domains are in-domain, the rest OOD
        assert len(summary.in_domain[model]) == len(TRAIN_DOMAINS)


def test_pace_is_the_members_training_time_per_step(quickstart_run) -> None:
    """quickstart.json's pace, recomputed from the four manifests; the total in steps from the timings."""
    report = json.loads((quickstart_run.out / "quickstart.json").read_text())
    results = [json.loads((m / "boom_member.json").read_text())["training_result"]
               for m in sorted((quickstart_run.out / "members").iterdir())]
    steps = sum(r["steps"] for r in results)
    per_step = sum(r["train_runtime_s"] for r in results) / steps
    speed = report["speed"]
    assert speed["training_steps"] == steps > 0
    assert speed["s_per_step"] == pytest.approx(per_step, abs=1e-3)
    assert speed["total_in_steps"] == pytest.approx(report["timings_s"]["total"] / per_step, rel=1e-3)
    assert speed["total_in_steps"] > steps  # the run did more than train
    assert speed["whole_run"] is True  # every member was trained by this run


def test_resumed_run_says_its_members_were_reused(quickstart_run, tmp_path: Path, tiny_bert_base) -> None:
    """A resumed run keeps the finished members: its pace is theirs, its total no longer the whole job's."""
    import shutil

    again = tmp_path / "run"
    shutil.copytree(quickstart_run.out, again)
    result = run_quickstart(TINY, again, resume=True, base_model=tiny_bert_base)
    before = json.loads((quickstart_run.out / "quickstart.json").read_text())["speed"]
    assert result.speed["whole_run"] is False
    assert (result.speed["training_steps"], result.speed["s_per_step"]) == (before["training_steps"], before["s_per_step"])
    assert json.loads((again / "quickstart.json").read_text())["speed"] == result.speed


def test_pace_is_none_for_a_member_without_a_training_record(quickstart_run, tmp_path: Path) -> None:
    import shutil

    from boom_merge.quickstart import training_speed

    member = tmp_path / "member"
    shutil.copytree(quickstart_run.out / "members/member-0-r40", member)
    manifest = json.loads((member / "boom_member.json").read_text())
    del manifest["training_result"]
    (member / "boom_member.json").write_text(json.dumps(manifest))
    assert training_speed([member], 100.0) is None


def test_scores_match_a_brute_force_ranking(quickstart_run) -> None:
    """nDCG@10 of each model on two training domains, recomputed from the built test split."""
    report = json.loads((quickstart_run.out / "quickstart.json").read_text())
    summary = quickstart_run.summary
    for label, key in (("BLS", "bls"), ("BOOM", "boom"), ("BOOM tuned", "boom_tuned")):
        for source, task in (("wordnet", "BoomWordNetRetrieval"), ("manpages", "BoomManPagesRetrieval")):
            expected = ndcg_at_10(report["models"][key], Path(report["corpus"]), source)
            assert summary.scores[label][task] == pytest.approx(expected, abs=1e-4)


def test_members_are_bagged_samples(quickstart_run) -> None:
    counts = {}
    for member in sorted((quickstart_run.out / "members").iterdir()):
        manifest = json.loads((member / "boom_member.json").read_text())
        counts[manifest["sample_ratio"]] = sum(d["sampled"] for d in manifest["datasets"].values())
    ratios = sorted(counts)
    assert ratios == [0.4, 0.6, 0.8, 1.0]
    assert [counts[r] for r in ratios] == sorted(counts.values()) and counts[0.4] < counts[1.0]


def test_boom_model_is_the_multislerp_of_the_members(quickstart_run) -> None:
    out = quickstart_run.out
    recipe = yaml.safe_load((out / "boom.yml").read_text())
    assert recipe["merge_method"] == "boom"
    members = [m["model"] for m in recipe["models"]]
    texts = ["a definition of a word", "ls lists directory contents"]
    expected = hand_merged_embeddings(members, lambda a: np_multislerp(a, [1, 1, 1, 1]), texts)
    got = SentenceTransformer(str(out / "boom"), device="cpu").encode(texts)
    assert np.abs(got - expected).max() <= 1e-5


def _balanced_choice(rows: list[dict]) -> dict:
    """The rule of tune/select.py, recomputed: max mean(ID dev, OOD dev); within 1e-9 the simpler
    candidate (scale 1, scale nearer 1, equal weights, more members, slerp, earlier in the search)."""
    values = [(row["id_dev"] + row["ood_dev"]) / 2 for row in rows]
    tied = [(i, row) for i, (row, value) in enumerate(zip(rows, values)) if value >= max(values) - 1e-9]
    return min(tied, key=lambda p: (p[1]["scale"] != 1, abs(p[1]["scale"] - 1), p[1]["weights"] != "equal",
                                    -len(p[1]["members"]), p[1]["interpolation"] != "slerp", p[0]))[1]


def test_tuned_model_is_the_balanced_choice_on_dev_splits_only(quickstart_run) -> None:
    out = quickstart_run.out
    data = json.loads((out / "tune/candidates.json").read_text())
    rows = data["candidates"]
    assert data["objective"] == "balanced" and len(rows) >= 10  # base, 4 members, bags, soups, scales, WiSE-FT
    full = [row for row in rows if not row["racing"]["raced_out"]]  # racing: the rest has slice scores only
    raced = [row for row in rows if row["racing"]["raced_out"]]
    assert all(row["objective"] is None and row["racing"]["behind"] > row["racing"]["margin"] for row in raced)
    ood_tests = set(quickstart_run.summary.tasks) - set(quickstart_run.summary.in_domain["BLS"])
    for row in full:  # 4 ID dev + 4 OOD dev splits, never an OOD test source
        assert len(row["tasks"]) == len(TRAIN_DOMAINS) + len(OOD_DEV_SOURCES)
        assert not set(row["tasks"]) & ood_tests
    for record in data["slice"].values():  # the slice reads the same dev splits
        assert len(record["tasks"]) == len(TRAIN_DOMAINS) + len(OOD_DEV_SOURCES)
        assert not set(record["tasks"]) & ood_tests
    chosen = _balanced_choice(full)
    assert data["chosen"] == chosen["key"]
    tune = json.loads((out / "quickstart.json").read_text())["tune"]
    assert (tune["chosen"], tune["id_dev"], tune["ood_dev"]) == (chosen["label"], chosen["id_dev"], chosen["ood_dev"])
    assert tune["candidates"] == len(full) == len(quickstart_run.tune.candidates)
    assert tune["raced_out"] == len(raced) == len(quickstart_run.tune.raced_out)
    assert quickstart_run.tune.label == chosen["label"]


def test_tuned_model_is_the_merge_of_its_recipe(quickstart_run, tmp_path: Path) -> None:
    from boom_merge.merge.pipeline import merge_recipe

    tuned = quickstart_run.out / "tune"
    again = merge_recipe(tuned / "recipe.yml", tmp_path / "again")
    (a,), (b,) = (list(model.glob("*.safetensors")) for model in (tuned / "model", again))
    ours, theirs = load_file(str(a)), load_file(str(b))
    assert ours.keys() == theirs.keys()
    assert all(np.array_equal(ours[k], theirs[k]) for k in ours)


def test_existing_run_needs_resume_or_force(quickstart_run) -> None:
    with pytest.raises(BoomError, match="--resume"):
        run_quickstart(TINY, quickstart_run.out)
