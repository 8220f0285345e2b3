"""`boom-merge incremental`: never touches OLD, exact at the ends, records lineage."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from safetensors.torch import load_file
from sentence_transformers import SentenceTransformer

from boom_merge.cli import main
from boom_merge.errors import BoomError
from boom_merge.lineage import LINEAGE_FILE, model_sha256
from tests.reference_merges import hand_merged_embeddings, np_multislerp

TEXTS = ["new domain text", "old domain text"]


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.rglob("*")}


def _incremental(old, update, out, *extra) -> None:
    result = CliRunner().invoke(main, ["incremental", str(old), str(update), "-o", str(out), *map(str, extra)])
    assert result.exit_code == 0, result.output


def test_alpha_zero_and_one_are_exact_and_old_is_untouched(tmp_path, tiny_bag) -> None:
    _, (old, update, *_) = tiny_bag
    before = _snapshot(old)
    digest = model_sha256(old)
    _incremental(old, update, tmp_path / "zero", "--update-weight", 0)
    _incremental(old, update, tmp_path / "one", "--update-weight", 1)
    for out, source in ((tmp_path / "zero", old), (tmp_path / "one", update)):
        merged, expected = load_file(str(out / "model.safetensors")), load_file(str(source / "model.safetensors"))
        assert merged.keys() == expected.keys()
        assert all(np.array_equal(merged[k].numpy(), expected[k].numpy()) for k in merged)
        dense = load_file(str(out / "2_Dense/model.safetensors"))
        assert all(np.array_equal(v.numpy(), load_file(str(source / "2_Dense/model.safetensors"))[k].numpy())
                   for k, v in dense.items())
    assert _snapshot(old) == before and model_sha256(old) == digest


@pytest.mark.parametrize("interpolation", ["slerp", "linear"])
def test_default_update_embeds_like_hand_merge_and_records_lineage(tmp_path, tiny_bag, interpolation) -> None:
    _, (old, update, *_) = tiny_bag
    out = tmp_path / "new"
    _incremental(old, update, out, "--update-weight", 0.3, "--interpolation", interpolation)
    if interpolation == "slerp":
        fn = lambda a: np_multislerp([a[1], a[0]], [0.7, 0.3])  # noqa: E731
    else:
        fn = lambda a: 0.3 * a[0] + 0.7 * a[1]  # noqa: E731
    expected = hand_merged_embeddings([update, old], fn, TEXTS)
    assert np.abs(SentenceTransformer(str(out), device="cpu").encode(TEXTS) - expected).max() <= 1e-5
    lineage = json.loads((out / LINEAGE_FILE).read_text())
    assert lineage["kind"] == "incremental"
    assert lineage["update_weight"] == 0.3 and lineage["interpolation"] == interpolation
    assert lineage["old"] == {"path": str(old.absolute()), "sha256": model_sha256(old)}
    assert lineage["update"]["sha256"] == model_sha256(update)


def test_lineage_chains_across_updates(tmp_path, tiny_bag) -> None:
    _, (old, u1, u2, _) = tiny_bag
    _incremental(old, u1, tmp_path / "v2")
    _incremental(tmp_path / "v2", u2, tmp_path / "v3")
    lineage = json.loads((tmp_path / "v3" / LINEAGE_FILE).read_text())
    assert lineage["old"]["path"] == str(tmp_path / "v2")
    assert lineage["old_lineage"]["update"]["path"] == str(u1.absolute())


def test_refuses_to_write_into_old_or_over_existing(tmp_path, tiny_bag) -> None:
    _, (old, update, *_) = tiny_bag
    before = _snapshot(old)
    inside = CliRunner().invoke(main, ["incremental", str(old), str(update), "-o", str(old / "new")])
    assert inside.exit_code != 0 and "inside the input" in inside.output
    same = CliRunner().invoke(main, ["incremental", str(old), str(update), "-o", str(old), "--force"])
    assert same.exit_code != 0
    out = tmp_path / "exists"
    out.mkdir()
    refused = CliRunner().invoke(main, ["incremental", str(old), str(update), "-o", str(out)])
    assert refused.exit_code != 0 and "--force" in refused.output
    assert _snapshot(old) == before
    assert not any(name.startswith(".") for name in os.listdir(tmp_path))


# --- --mode add: OLD + λ·(UPDATE − BASE) -------------------------------------------------


def _update_from(base: Path, source: Path, target: Path, **manifest) -> Path:
    """A copy of ``source`` whose boom_member.json says it was trained from ``base``."""
    import shutil

    from boom_merge.lineage import write_member_manifest

    shutil.copytree(source, target)
    write_member_manifest(target, {"kind": "update", "base_model": str(base), "init": "base",
                                   "init_model": str(base), "init_model_sha256": model_sha256(base), **manifest})
    return target


def _tensors(model: Path) -> dict[str, np.ndarray]:
    found = {}
    for file in ("model.safetensors", "2_Dense/model.safetensors"):
        found |= {f"{file}:{k}": v.double().numpy() for k, v in load_file(str(model / file)).items()}
    return found


def test_add_mode_is_old_plus_lambda_times_the_task_vector(tmp_path, tiny_bag) -> None:
    import yaml

    base, (old, member, *_) = tiny_bag
    update = _update_from(base, member, tmp_path / "update")
    out = tmp_path / "new"
    _incremental(old, update, out, "--mode", "add", "--update-weight", 0.7)
    got, o, u, b = _tensors(out), _tensors(old), _tensors(update), _tensors(base)
    assert got.keys() == o.keys()
    for key in got:  # independent numpy: OLD + 0.7 (UPDATE - BASE), float32 rounding only
        np.testing.assert_allclose(got[key], o[key] + 0.7 * (u[key] - b[key]), atol=2e-6, rtol=0)
    expected = hand_merged_embeddings([old, update, base], lambda a: a[0] + 0.7 * (a[1] - a[2]), TEXTS)
    assert np.abs(SentenceTransformer(str(out), device="cpu").encode(TEXTS) - expected).max() <= 1e-5
    lineage = json.loads((out / LINEAGE_FILE).read_text())
    assert (lineage["kind"], lineage["mode"], lineage["update_weight"]) == ("incremental", "add", 0.7)
    assert lineage["update_base"] == {"path": str(base), "sha256": model_sha256(base)}
    assert "interpolation" not in lineage
    roles = {Path(i["path"]).name: i["role"] for i in lineage["inputs"]}
    assert roles == {old.name: "old", "update": "update", base.name: "base"}
    # the recipe is plain mergekit task_arithmetic over BASE, not normalised
    recipe = yaml.safe_load((out / "boom_recipe.yml").read_text())
    assert recipe["merge_method"] == "task_arithmetic" and recipe["base_model"] == str(base)
    assert recipe["parameters"]["normalize"] is False
    assert [m["parameters"]["weight"] for m in recipe["models"]] == [1.0, 0.7]
    assert (out / "modules.json").read_text() == (old / "modules.json").read_text()
    assert f"add mode, OLD + 0.7·(UPDATE − BASE), base `{base.name}`" in (out / "README.md").read_text()
    # the card names models, never by a local path (its recipe's header comment neither)
    assert str(tmp_path) not in (out / "README.md").read_text() and str(base.parent) not in (out / "README.md").read_text()
    assert f"BASE = {base.name}\n" in (out / "boom_recipe.yml").read_text()
    # plain mergekit-yaml runs the written recipe to the same weights, bit for bit
    import subprocess

    subprocess.run(["mergekit-yaml", str(out / "boom_recipe.yml"), str(tmp_path / "plain")], check=True,
                   capture_output=True)
    plain = _tensors(tmp_path / "plain")
    assert all(np.array_equal(plain[k], got[k]) for k in got)


def test_add_mode_base_override_and_refusals(tmp_path, tiny_bag) -> None:
    base, (old, member, other, _) = tiny_bag
    plain = CliRunner().invoke(main, ["incremental", str(old), str(member), "-o", str(tmp_path / "a"), "--mode", "add"])
    assert plain.exit_code != 0 and "--update-base" in plain.output and "boom_member.json" in plain.output
    # --update-base: BASE given by hand (the default λ is 1: the whole task vector)
    _incremental(old, member, tmp_path / "b", "--mode", "add", "--update-base", base)
    got, o, u, b = _tensors(tmp_path / "b"), _tensors(old), _tensors(member), _tensors(base)
    assert all(np.allclose(got[k], o[k] + u[k] - b[k], atol=2e-6, rtol=0) for k in got)
    # a recorded base whose content changed is refused
    update = _update_from(other, member, tmp_path / "update", init_model_sha256="0" * 64)
    wrong = CliRunner().invoke(main, ["incremental", str(old), str(update), "-o", str(tmp_path / "c"), "--mode", "add"])
    assert wrong.exit_code != 0 and "not the model the update was trained from" in wrong.output
    negative = CliRunner().invoke(main, ["incremental", str(old), str(member), "-o", str(tmp_path / "d"),
                                         "--mode", "add", "--update-base", str(base), "--update-weight", "-1"])
    assert negative.exit_code != 0 and ">= 0" in negative.output
    assert not any((tmp_path / n).exists() for n in "acd")


def test_add_mode_from_the_existing_model_is_interpolation(tmp_path, tiny_bag) -> None:
    """An update trained from OLD (train-update --init existing): OLD + λ(UPDATE − OLD)."""
    _, (old, member, *_) = tiny_bag
    update = _update_from(old, member, tmp_path / "update", init="existing")
    _incremental(old, update, tmp_path / "new", "--mode", "add", "--update-weight", 0.25)
    got, o, u = _tensors(tmp_path / "new"), _tensors(old), _tensors(update)
    assert all(np.allclose(got[k], 0.75 * o[k] + 0.25 * u[k], atol=2e-6, rtol=0) for k in got)


def test_interpolate_mode_is_the_default_bit_for_bit(tmp_path, tiny_bag) -> None:
    _, (old, update, *_) = tiny_bag
    _incremental(old, update, tmp_path / "default", "--update-weight", 0.3)
    _incremental(old, update, tmp_path / "explicit", "--mode", "interpolate", "--update-weight", 0.3)
    for file in ("model.safetensors", "2_Dense/model.safetensors"):
        assert (tmp_path / "default" / file).read_bytes() == (tmp_path / "explicit" / file).read_bytes()
    assert json.loads((tmp_path / "explicit" / LINEAGE_FILE).read_text())["mode"] == "interpolate"


# --- --update-weight auto -----------------------------------------------------------------


def _table(rows):
    from boom_merge.incremental.update_weight import WeightScore

    return [WeightScore(w, old / 100, new / 100, {}) for w, old, new in rows]


def test_auto_rule_on_a_fixed_score_table() -> None:
    from boom_merge.incremental.update_weight import choose_weight, weight_rule

    table = _table([(0.0, 80.0, 60.0), (0.25, 79.8, 66.0), (0.5, 79.6, 70.0), (0.75, 79.0, 74.0), (1.0, 75.0, 76.0)])
    # best mean is 0.75 (76.5), but it loses 1.0 point of the old domains: 0.5 is the best allowed
    assert choose_weight(table, 0.5).weight == 0.5
    assert choose_weight(table, 1.0).weight == 0.75
    assert choose_weight(table, 0.0).weight == 0.0  # nothing may be lost: OLD itself
    tied = _table([(0.0, 80.0, 60.0), (0.3, 80.0, 70.0), (0.6, 80.0, 70.0)])
    assert choose_weight(tied, 0.5).weight == 0.3  # ties go to the smaller weight
    with pytest.raises(Exception, match="no weight 0"):
        choose_weight(_table([(0.5, 1, 1)]), 0.5)
    assert "0.5 points below OLD's" in weight_rule("interpolate", 0.5) and "α" in weight_rule("interpolate", 0.5)


def _stub_dev_corpus(tmp_path: Path, monkeypatch) -> Path:
    """An empty corpus whose dev sources are stubbed as old-domain "old" and new-domain "new"."""
    from boom_merge.incremental import update_weight
    from boom_merge.tune.scoring import DevTasks

    corpus = tmp_path / "corpus"
    (corpus / "dev").mkdir(parents=True)
    (corpus / "manifest.json").write_text("{}")
    monkeypatch.setattr(update_weight, "dev_sources", lambda *a: DevTasks(("old",), ("new",)))
    return corpus


def test_auto_end_to_end_with_a_fixed_scorer(tmp_path, tiny_bag, monkeypatch) -> None:
    """The search merges each α, scores it, writes the table and plot, and merges the chosen α."""
    from boom_merge.incremental import update_weight
    from boom_merge.tune.select import Scores

    _, (old, update, *_) = tiny_bag
    corpus = _stub_dev_corpus(tmp_path, monkeypatch)
    seen = []

    def scorer(model: Path) -> Scores:  # old dev falls and new dev rises with α (read from the weights)
        alpha = 0.0 if model == old.absolute() else json.loads((model / LINEAGE_FILE).read_text())["update_weight"]
        seen.append(alpha)
        return Scores(0.8 - 0.02 * alpha, 0.6 + 0.1 * alpha, {"old": 0.8 - 0.02 * alpha, "new": 0.6 + 0.1 * alpha})

    lines = []
    result = update_weight.auto_update_weight(old, update, tmp_path / "new", corpus=corpus, grid=[0.1, 0.25, 0.5],
                                              max_old_loss=0.6, scorer=scorer, echo=lines.append)
    assert lines[0].startswith("selection rule (fixed before scoring)")
    assert sorted(seen) == [0.0, 0.1, 0.25, 0.5]
    assert result.chosen.weight == 0.25  # 0.5 would lose 1.0 point, more than 0.6
    lineage = json.loads((tmp_path / "new" / LINEAGE_FILE).read_text())
    assert lineage["update_weight"] == 0.25 and lineage["update_weight_choice"]["max_old_loss"] == 0.6
    report = tmp_path / "new" / "update_weight"
    data = json.loads((report / "candidates.json").read_text())
    assert data["chosen"] == 0.25 and [r["allowed"] for r in data["candidates"]] == [True, True, True, False]
    assert "**chosen** | 0.25" in (report / "candidates.md").read_text()
    assert (report / "candidates.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / ".new.weight-work").exists()
    # --force over a finished NEW re-selects from its table without scoring again
    seen.clear()
    again = update_weight.auto_update_weight(old, update, tmp_path / "new", corpus=corpus, grid=[0.1, 0.25, 0.5],
                                             max_old_loss=2.0, scorer=scorer, force=True)
    assert seen == [] and again.scored_now == 0 and again.chosen.weight == 0.5


def test_auto_while_another_run_writes_the_same_out(tmp_path, tiny_bag, monkeypatch) -> None:
    """The search holds NEW's lock from the start: a second run fails fast and scores nothing."""
    import fcntl

    from boom_merge.incremental import update_weight

    _, (old, update, *_) = tiny_bag
    corpus = _stub_dev_corpus(tmp_path, monkeypatch)
    seen = []
    fd = os.open(tmp_path / ".new.lock", os.O_RDWR | os.O_CREAT)  # the first run's lock
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(BoomError, match=f"another boom-merge is writing {tmp_path / 'new'}"):
            update_weight.auto_update_weight(old, update, tmp_path / "new", corpus=corpus, grid=[0.5],
                                             scorer=lambda model: seen.append(model))
    finally:
        os.close(fd)
    assert seen == [] and not (tmp_path / ".new.weight-work").exists() and not (tmp_path / "new").exists()


def test_cli_fit_adapter_and_auto_need_a_corpus(tmp_path, tiny_bag) -> None:
    from tests.test_adapter import FIT
    from tests.test_evaluation import write_corpus

    _, (old, update, *_) = tiny_bag
    for flags in (["--update-weight", "auto"], ["--fit-adapter", str(tmp_path / "a")]):
        result = CliRunner().invoke(main, ["incremental", str(old), str(update), "-o", str(tmp_path / "n"), *flags])
        assert result.exit_code == 2 and "need --corpus" in result.output
    corpus = write_corpus(tmp_path / "corpus")
    (corpus / "train").mkdir()
    rows = "".join(json.dumps({"query": t, "pos": [t.upper()]}) + "\n" for t in FIT)
    (corpus / "train" / "mix.jsonl").write_text(rows)
    _incremental(old, update, tmp_path / "new", "--corpus", corpus, "--fit-adapter", tmp_path / "adapter",
                 "--device", "cpu")
    adapted = SentenceTransformer(str(tmp_path / "adapter"), device="cpu")
    assert json.loads((tmp_path / "adapter" / "boom_adapter.json").read_text())["kind"] == "orthogonal"
    assert adapted.encode(TEXTS).shape == (2, 16)


def test_auto_scores_the_dev_splits_with_mteb(tmp_path, tiny_bag) -> None:
    """Real dev scoring: old dev = OLD's training domain, new dev = the update's new data; weight 0 is OLD."""
    import shutil

    from boom_merge.lineage import write_member_manifest
    from tests.test_evaluation import read_split, write_corpus

    def ndcg_at_10(model: Path, root: Path, name: str) -> float:  # brute force, queries with the model's prompt
        queries, docs, qrels = read_split(root, name)
        st = SentenceTransformer(str(model), device="cpu")
        q = st.encode(list(queries.values()), prompt_name="query", normalize_embeddings=True)
        d = st.encode(list(docs.values()), normalize_embeddings=True)
        ids, values = list(docs), []
        for row, qid in zip(q @ d.T, queries):
            ranking = [ids[i] for i in np.argsort(-row)[:10]]
            dcg = sum(1 / np.log2(rank + 2) for rank, doc in enumerate(ranking) if doc in qrels[qid])
            values.append(dcg / sum(1 / np.log2(rank + 2) for rank in range(min(10, len(qrels[qid])))))
        return float(np.mean(values))

    base, (member, other, *_) = tiny_bag
    old, update = Path(shutil.copytree(member, tmp_path / "old")), Path(shutil.copytree(other, tmp_path / "update"))
    write_member_manifest(old, {"kind": "member", "base_model": str(base), "datasets": {"python_code": {}}})
    write_member_manifest(update, {"kind": "update", "base_model": str(base), "init_model": str(base),
                                   "new_data": {"path": "new", "datasets": {"shell_utils": {}}},
                                   "history": {"path": "old", "datasets": {"python_code": {}}}})
    corpus = write_corpus(tmp_path / "corpus")
    for name in ("python_code", "shell_utils"):  # the dev split: the fixture's test split under dev/
        shutil.copytree(corpus / "test" / name, corpus / "dev" / name)
        (corpus / "dev" / name / "qrels" / "test.tsv").rename(corpus / "dev" / name / "qrels" / "dev.tsv")
    result = CliRunner().invoke(main, ["incremental", str(old), str(update), "-o", str(tmp_path / "new"),
                                       "--update-weight", "auto", "--corpus", str(corpus), "--weight-grid", "1",
                                       "--max-old-loss", "100", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("selection rule (fixed before scoring)")
    assert "old-domain dev: python_code; new-domain dev: shell_utils" in lines
    table = json.loads((tmp_path / "new" / "update_weight" / "candidates.json").read_text())
    by_weight = {row["weight"]: row for row in table["candidates"]}
    assert by_weight[0.0]["old_dev"] == pytest.approx(ndcg_at_10(old, corpus, "python_code"), abs=1e-4)
    assert by_weight[0.0]["new_dev"] == pytest.approx(ndcg_at_10(old, corpus, "shell_utils"), abs=1e-4)
    assert by_weight[1.0]["new_dev"] == pytest.approx(ndcg_at_10(update, corpus, "shell_utils"), abs=1e-4)
    expected = max(by_weight.values(), key=lambda row: (row["objective"], -row["weight"]))["weight"]  # all allowed
    assert table["chosen"] == expected
    assert json.loads((tmp_path / "new" / LINEAGE_FILE).read_text())["update_weight"] == expected
    assert f"chosen update weight {expected:g}" in result.output and "Serving quality" in result.output


@pytest.mark.parametrize("listed", [True, False], ids=["built manifest", "empty manifest"])
def test_update_weight_and_tune_choose_the_same_dev_splits(tmp_path, listed) -> None:
    """One rule for both doors: a ``dev/`` folder the corpus manifest does not list judges nothing (no MTEB task reads it)."""
    import shutil

    from boom_merge.incremental.update_weight import dev_sources
    from boom_merge.lineage import write_member_manifest
    from boom_merge.tune.scoring import DevTasks, dev_tasks
    from tests.test_evaluation import write_corpus

    corpus = write_corpus(tmp_path / "corpus")
    for name, copy in (("python_code", "python_code"), ("shell_utils", "shell_utils"), ("unlisted", "python_code")):
        shutil.copytree(corpus / "test" / copy, corpus / "dev" / name)
        (corpus / "dev" / name / "qrels" / "test.tsv").rename(corpus / "dev" / name / "qrels" / "dev.tsv")
    if not listed:
        (corpus / "manifest.json").write_text("{}")
    old, update = tmp_path / "old", tmp_path / "update"
    write_member_manifest(old.mkdir() or old, {"kind": "member", "datasets": {"python_code": {}, "unlisted": {}}})
    write_member_manifest(update.mkdir() or update, {"kind": "update", "new_data": {"datasets": {"shell_utils": {}}},
                                                     "history": {"datasets": {"python_code": {}}}})
    if listed:
        by_tune = DevTasks(dev_tasks(corpus, [old], None, need_ood=False).in_domain,
                           dev_tasks(corpus, [update], ["shell_utils"], need_ood=False).in_domain)
        assert dev_sources(corpus, old, update) == by_tune == DevTasks(("python_code",), ("shell_utils",))
        return
    for door in (lambda: dev_sources(corpus, old, update), lambda: dev_tasks(corpus, [old], None, need_ood=False)):
        with pytest.raises(BoomError, match="no dev split"):  # nothing listed: neither door scores a dev/ folder
            door()


@pytest.mark.parametrize(("old_dtype", "claim", "update_dtype"), [
    ("float32", "float16", "float32"),  # a Hub wart: config.json claims float16 over float32 weights
    ("bfloat16", "bfloat16", "float32"),  # a bf16 OLD, a float32 update: OLD's, not the update's
])
def test_the_output_keeps_the_dtype_of_the_model_it_continues(tmp_path, tiny_bag, old_dtype, claim, update_dtype) -> None:
    """One dtype rule (``merge.pipeline.output_dtype``): an update keeps OLD's stored dtype, as a plain merge keeps
    its first input's; what a config.json claims decides nothing."""
    import torch
    import yaml

    from boom_merge.incremental.update import incremental_merge
    from boom_merge.merge.pipeline import merge_recipe

    base, (member, other, *_) = tiny_bag
    old, update = tmp_path / "old", tmp_path / "update"
    SentenceTransformer(str(member), device="cpu").to(getattr(torch, old_dtype)).save(str(old))
    SentenceTransformer(str(other), device="cpu").to(getattr(torch, update_dtype)).save(str(update))
    config = json.loads((old / "config.json").read_text())
    config.pop("torch_dtype", None)
    (old / "config.json").write_text(json.dumps(config | {"dtype": claim}))
    recipe = tmp_path / "plain.yml"
    models = [{"model": str(model), "parameters": {"weight": 1.0}} for model in (old, update)]
    recipe.write_text(yaml.safe_dump({"merge_method": "linear", "models": models}))
    outputs = [incremental_merge(old, update, tmp_path / "interpolate").path,
               incremental_merge(old, update, tmp_path / "add", mode="add", update_base=base).path,
               merge_recipe(recipe, tmp_path / "plain")]
    for out in outputs:
        assert {t.dtype for t in load_file(str(out / "model.safetensors")).values() if t.is_floating_point()} == {
            getattr(torch, old_dtype)}, out.name


def test_cli_weight_values(tmp_path, tiny_bag) -> None:
    _, (old, update, *_) = tiny_bag
    for weight, message in (("abc", "give a number or auto"), ("1.5", "must be [0, 1] for --mode interpolate")):
        result = CliRunner().invoke(main, ["incremental", str(old), str(update), "-o", str(tmp_path / "n"),
                                           "--update-weight", weight])
        assert result.exit_code != 0 and message in result.output, result.output
    assert not (tmp_path / "n").exists()


def test_add_mode_with_a_hub_base_from_the_manifest(tmp_path, tiny_bag, hub_cache) -> None:
    """A base recorded as a Hub id and commit resolves through the HF cache; the recipe names the id."""
    import yaml

    from tests.test_models import OLD_SHA, place_in_cache

    base, (old, member, *_) = tiny_bag
    place_in_cache(base, hub_cache, "acme/base", sha=OLD_SHA)
    update = _update_from(base, member, tmp_path / "update", init_model="acme/base", init_model_revision=OLD_SHA)
    out = tmp_path / "new"
    _incremental(old, update, out, "--mode", "add", "--update-weight", 0.5)
    got, o, u, b = _tensors(out), _tensors(old), _tensors(update), _tensors(base)
    assert all(np.allclose(got[k], o[k] + 0.5 * (u[k] - b[k]), atol=2e-6, rtol=0) for k in got)
    assert yaml.safe_load((out / "boom_recipe.yml").read_text())["base_model"] == f"acme/base@{OLD_SHA}"
    lineage = json.loads((out / LINEAGE_FILE).read_text())
    assert lineage["update_base"]["hub_id"] == "acme/base" and lineage["update_base"]["revision"] == OLD_SHA
    assert {i["role"]: i.get("hub_id") for i in lineage["inputs"]}["base"] == "acme/base"


def test_hub_ids_merge_like_the_dirs_and_the_lineage_names_id_and_commit(tmp_path, tiny_bag, hub_cache) -> None:
    """UPDATE (and OLD) as Hub ids: the dirs' weights bit for bit; recipe and lineage name id@commit, no cache path."""
    import yaml

    from tests.test_models import OLD_SHA, SHA, place_in_cache

    _, (old, update, *_) = tiny_bag
    place_in_cache(update, hub_cache, "acme/m1", sha=SHA)
    place_in_cache(old, hub_cache, "acme/m0", sha=OLD_SHA)
    _incremental(old, update, tmp_path / "by-dir", "--update-weight", 0.3)
    _incremental(old, "acme/m1", tmp_path / "by-id", "--update-weight", 0.3)
    _incremental("acme/m0", "acme/m1@main", tmp_path / "both", "--update-weight", 0.3)
    for out in (tmp_path / "by-id", tmp_path / "both"):
        for file in ("model.safetensors", "2_Dense/model.safetensors"):
            assert (out / file).read_bytes() == (tmp_path / "by-dir" / file).read_bytes()
        recipe = yaml.safe_load((out / "boom_recipe.yml").read_text())
        assert recipe["models"] == [{"model": f"acme/m1@{SHA}"}]
        lineage = json.loads((out / LINEAGE_FILE).read_text())
        assert lineage["update"] == {"path": "acme/m1", "sha256": model_sha256(update), "hub_id": "acme/m1",
                                     "revision": SHA}
        roles = {i["role"]: i for i in lineage["inputs"]}
        assert (roles["update"]["hub_id"], roles["update"]["revision"]) == ("acme/m1", SHA)
        for name in (LINEAGE_FILE, "README.md", "boom_recipe.yml"):
            assert str(hub_cache) not in (out / name).read_text(), name
    lineage = json.loads((tmp_path / "by-id" / LINEAGE_FILE).read_text())
    assert lineage["old"] == {"path": str(old.absolute()), "sha256": model_sha256(old)}  # a local dir as before
    lineage = json.loads((tmp_path / "both" / LINEAGE_FILE).read_text())
    assert (lineage["old"]["hub_id"], lineage["old"]["revision"]) == ("acme/m0", OLD_SHA)
    assert yaml.safe_load((tmp_path / "both" / "boom_recipe.yml").read_text())["base_model"] == f"acme/m0@{OLD_SHA}"
    assert {i["role"] for i in lineage["inputs"]} == {"old", "update"}


def _corpus_with_train(root: Path, train: bytes | None) -> Path:
    """The evaluation fixture corpus; ``train``: the bytes of ``train/mix.jsonl`` (None: no train split)."""
    from tests.test_evaluation import write_corpus

    corpus = write_corpus(root)
    if train is not None:
        (corpus / "train").mkdir()
        (corpus / "train" / "mix.jsonl").write_bytes(train)
    return corpus


_FIT_ROWS = "".join(json.dumps({"query": f"query {i}", "pos": [f"text {i}"]}) + "\n" for i in range(40)).encode()


@pytest.mark.parametrize("case, needles", [
    ("no train split", ["corpus", "no train split"]),
    ("empty train split", ["corpus", "train split (mix.jsonl) holds no text", "at least 2"]),
    ("non-UTF-8 train file", ["mix.jsonl", "unreadable training file"]),
    ("corrupt test split", ["queries.jsonl"]),
    ("adapter is -o", ["overlap"]),
    ("adapter inside -o", ["overlap"]),
])
def test_fit_adapter_inputs_are_checked_before_new_is_written(tmp_path, tiny_bag, case, needles) -> None:
    """Issue 22.1/22.2: every input of `incremental --fit-adapter` is checked before NEW's first byte."""
    _, (old, update, *_) = tiny_bag
    train = {"no train split": None, "empty train split": b"", "non-UTF-8 train file": b"\xff\xfe{}\n"}.get(case, _FIT_ROWS)
    corpus = _corpus_with_train(tmp_path / "corpus", train)
    if case == "corrupt test split":
        (next((corpus / "test").iterdir()) / "queries.jsonl").write_text('{"_id": "q0", "text": \n')
    new, adapter = tmp_path / "new", {"adapter is -o": tmp_path / "new",
                                      "adapter inside -o": tmp_path / "new" / "q"}.get(case, tmp_path / "adapter")
    before = _snapshot(old)
    result = CliRunner().invoke(main, ["incremental", str(old), str(update), "-o", str(new), "--corpus", str(corpus),
                                       "--fit-adapter", str(adapter), "--device", "cpu"])
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    for needle in needles:
        assert needle in errors[0], errors[0]
    assert not new.exists() and not adapter.exists() and not (tmp_path / "adapter").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".new")] and _snapshot(old) == before


def test_a_failure_after_new_is_written_removes_it(tmp_path, tiny_bag, monkeypatch) -> None:
    """Issue 22.1: all or nothing: when the drift report (or the adapter) fails after the merge, NEW goes too."""
    from boom_merge.incremental import drift

    _, (old, update, *_) = tiny_bag
    corpus = _corpus_with_train(tmp_path / "corpus", _FIT_ROWS)
    seen = []

    def failing(old_model, new_model, *args, **kwargs):
        seen.append(Path(new_model))
        assert (Path(new_model) / "model.safetensors").is_file()  # NEW was written
        raise BoomError("the model produced NaN or Inf embeddings", path=new_model)

    monkeypatch.setattr(drift, "drift_report", failing)
    result = CliRunner().invoke(main, ["incremental", str(old), str(update), "-o", str(tmp_path / "new"),
                                       "--corpus", str(corpus), "--fit-adapter", str(tmp_path / "adapter")])
    assert result.exit_code == 1 and seen == [(tmp_path / "new").absolute()], result.output
    assert "updated model written" not in result.output
    assert not (tmp_path / "new").exists() and not (tmp_path / "adapter").exists()


def test_auto_refuses_a_nan_update_before_scoring_anything(tmp_path, tiny_bag, monkeypatch) -> None:
    """As tune (issue 22.6): a refused input fails before the first score and leaves no work dir."""
    import shutil

    from safetensors.torch import save_file

    from boom_merge.incremental import update_weight

    _, (old, update, *_) = tiny_bag
    broken = Path(shutil.copytree(update, tmp_path / "update"))
    state = load_file(str(broken / "model.safetensors"))
    state["embeddings.LayerNorm.weight"][0] = float("nan")
    save_file(state, str(broken / "model.safetensors"))
    corpus = _stub_dev_corpus(tmp_path, monkeypatch)
    seen = []
    with pytest.raises(BoomError, match="NaN or Inf") as error:
        update_weight.auto_update_weight(old, broken, tmp_path / "new", corpus=corpus, grid=[0.5],
                                         scorer=lambda model: seen.append(model))
    assert str(broken) in str(error.value)
    assert seen == [] and not (tmp_path / ".new.weight-work").exists() and not (tmp_path / "new").exists()
