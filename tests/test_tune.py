"""``boom-merge tune``: greedy soup and selection rule by hand; a real tune on tiny models.

The end-to-end run merges tiny members with mergekit and scores them with MTEB on the
dev splits of a corpus written here (two training domains, one OOD dev source, and an
OOD test source whose test split must never be read).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from safetensors.numpy import load_file

from boom_merge.cli import main
from boom_merge.errors import BoomError
from boom_merge.tune import Scores, candidate, choose, greedy_soup, selection_rule, tune
from boom_merge.tune.candidates import recipe_of
from tests.tiny_models import make_tiny_st

# --- greedy soup and the selection rule on fixed numbers -----------------------------


def test_greedy_soup_against_a_hand_computation() -> None:
    own = {"a": 0.50, "b": 0.70, "c": 0.60, "d": 0.40, "e": 0.55}
    soups = {"bc": 0.72, "abc": 0.71, "bce": 0.72, "bcd": 0.75}  # "bce" only equals: not an improvement
    calls = []

    def soup_score(trial: tuple[str, ...]) -> float:
        calls.append(trial)
        return soups["".join(sorted(trial))]

    soup, steps = greedy_soup(list("abcde"), own.__getitem__, soup_score)
    # order by own score: b .70, c .60, e .55, a .50, d .40
    assert calls == [("b", "c"), ("b", "c", "e"), ("b", "c", "a"), ("b", "c", "d")]
    assert [(s.members, s.score, s.kept) for s in steps] == [
        (("b", "c"), 0.72, True), (("b", "c", "e"), 0.72, False), (("b", "c", "a"), 0.71, False),
        (("b", "c", "d"), 0.75, True),
    ]
    assert soup == ("b", "c", "d")
    assert greedy_soup(["x"], lambda m: 0.1, soup_score) == (("x",), [])


def _table() -> list[tuple]:
    """(candidate, ID dev, OOD dev) with the objective winners worked out by hand."""
    return [
        (candidate("base", [3], scale=0.0, order=0), 0.40, 0.60),        # balanced .50
        (candidate("member", [3], order=1), 0.70, 0.40),                 # .55, best ID
        (candidate("bag", [0, 1, 2, 3], order=2), 0.66, 0.50),           # .58
        (candidate("bag", [0, 1, 2, 3], scale=0.75, order=3), 0.62, 0.56),  # .59 best balanced
        (candidate("wise_ft", [3], scale=0.25, order=4), 0.45, 0.62),    # .535, best OOD
        (candidate("bag", [0, 1, 2, 3], weights="ratio", scale=0.75, order=5), 0.60, 0.58),  # .59 tie, ratio
        (candidate("soup", [1, 3], scale=0.75, order=6), 0.59, 0.59),    # .59 tie, fewer members
    ]


def test_selection_rule_on_a_fixed_table() -> None:
    scored = [(c, Scores(i, o)) for c, i, o in _table()]
    cands = [c for c, *_ in _table()]
    assert choose(scored, "balanced") == cands[3]  # three-way tie at .59: equal weights, all members win
    assert choose(scored, "id") == cands[1]
    assert choose(scored, "ood") == cands[4]
    # a tie with a scale-1 candidate goes to scale 1
    tied = [(cands[3], Scores(0.5, 0.5)), (cands[2], Scores(0.4, 0.6)), (cands[6], Scores(0.6, 0.4))]
    assert choose(tied, "balanced") == cands[2]
    assert "mean of the ID-dev and OOD-dev averages" in selection_rule("balanced")
    with pytest.raises(BoomError, match="OOD-dev"):
        choose([(cands[0], Scores(0.5, None))], "balanced")


def test_candidates_normalise_and_write_boom_recipes(tmp_path: Path) -> None:
    assert candidate("member", [2], interpolation="linear", weights="ratio").key == candidate("member", [2]).key
    assert candidate("bag", [1, 0]).members == (0, 1)
    cand = candidate("bag", [0, 1], interpolation="linear", scale=0.5)
    recipe = recipe_of(cand, [tmp_path / "m0", tmp_path / "m1"], tmp_path / "base")
    assert recipe["merge_method"] == "boom" and recipe["base_model"] == str((tmp_path / "base").resolve())
    assert recipe["parameters"] == {"interpolation": "linear", "scale": 0.5}
    assert [m["parameters"]["weight"] for m in recipe["models"]] == [0.5, 0.5]


# --- a real tune on tiny models ------------------------------------------------------

TRAIN, OOD_DEV, OOD_TEST = ("alpha", "beta"), ("gamma",), ("omega",)
WORDS = ["river", "stone", "cloud", "forest", "candle", "mirror", "garden", "ladder", "harbor", "violin",
         "pepper", "marble", "falcon", "silver", "meadow", "lantern", "thunder", "velvet", "compass", "orchard"]


def _write_split(root: Path, split: str, name: str, offset: int) -> None:
    folder = root / split / name
    (folder / "qrels").mkdir(parents=True)
    words = WORDS[offset:] + WORDS[:offset]
    with (folder / "queries.jsonl").open("w") as queries, (folder / "corpus.jsonl").open("w") as corpus:
        for i, word in enumerate(words[:10]):
            queries.write(json.dumps({"_id": f"{name}-{split}-q{i}", "text": f"{word} {name}"}) + "\n")
            corpus.write(json.dumps({"_id": f"{name}-{split}-d{i}", "title": "", "text": f"a {word} of {name} kind"}) + "\n")
    qrels = "".join(f"{name}-{split}-q{i}\t{name}-{split}-d{i}\t1\n" for i in range(10))
    (folder / "qrels" / f"{split}.tsv").write_text(f"query-id\tcorpus-id\tscore\n{qrels}")


def write_dev_corpus(root: Path) -> Path:
    """A built corpus with dev splits; OOD test sources have no dev split."""
    sources = {}
    for offset, name in enumerate((*TRAIN, *OOD_DEV, *OOD_TEST)):
        role = "train" if name in TRAIN else "ood_dev" if name in OOD_DEV else "ood_test"
        splits = ["test"] if role == "ood_test" else ["train", "dev", "test"]
        sources[name] = {"domain": "words", "task": "retrieval", "licence": "CC0-1.0", "role": role, "splits": splits}
        for split in splits[1:]:
            _write_split(root, split, name, 3 * offset + (split == "dev"))
    roles = {"train": list(TRAIN), "ood_dev": list(OOD_DEV), "ood_test": list(OOD_TEST)}
    (root / "manifest.json").write_text(json.dumps({"seed": 0, "sources": sources, "missing": {}, "roles": roles}))
    return root


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path], Path]:
    root = tmp_path_factory.mktemp("tune")
    base = make_tiny_st(root / "base", seed=0)
    members = []
    for i, ratio in enumerate((0.5, 1.0)):
        member = make_tiny_st(root / f"member-{i}", seed=i + 1, perturb_from=base, perturb_scale=0.02 * (i + 1))
        manifest = {"kind": "member", "sample_ratio": ratio, "member_index": i, "seed": 0, "datasets": {name: {"rows": 10} for name in TRAIN}}
        (member / "boom_member.json").write_text(json.dumps(manifest))
        members.append(member)
    return base, members, write_dev_corpus(root / "corpus")


@pytest.fixture(scope="module")
def tuned(setup, tmp_path_factory: pytest.TempPathFactory):
    base, members, corpus = setup
    out = tmp_path_factory.mktemp("runs") / "tune"
    result = tune(members, out, base=base, corpus=corpus, scales=(0.5, 1.0), max_queries=8, max_corpus=10,
                  merge=True, progress=False, device="cpu")
    return result, out


def test_tune_scores_every_candidate_on_dev_and_picks_by_the_rule(tuned, setup) -> None:
    result, out = tuned
    data = json.loads((out / "candidates.json").read_text())
    rows = {row["key"]: row for row in data["candidates"]}
    labels = {row["label"] for row in rows.values()}
    # base, both members, 2 interpolations x 2 weights, the scale grid on the best bag, the WiSE-FT line
    assert {"base", "member-0", "member-1", "WiSE-FT member-1 t=0.5"} <= labels
    assert {(r["interpolation"], r["weights"]) for r in rows.values() if r["kind"] == "bag"} == {
        ("slerp", "equal"), ("slerp", "ratio"), ("linear", "equal"), ("linear", "ratio")}
    assert len(rows) == len(result.candidates) == 9
    for row in rows.values():  # dev tasks only: the OOD test source never appears
        assert sorted(row["tasks"]) == ["BoomAlphaRetrieval", "BoomBetaRetrieval", "BoomGammaRetrieval"]
        assert row["id_dev"] == pytest.approx((row["tasks"]["BoomAlphaRetrieval"] + row["tasks"]["BoomBetaRetrieval"]) / 2)
        assert row["ood_dev"] == pytest.approx(row["tasks"]["BoomGammaRetrieval"])
    best = max(row["objective"] for row in rows.values())
    assert rows[data["chosen"]]["objective"] == pytest.approx(best)
    assert data["chosen"] == result.chosen.key
    assert (out / "pareto.png").stat().st_size > 1000
    assert "**chosen**" in (out / "candidates.md").read_text()
    assert not (out.parent / f".{out.name}.tune-work").exists()


def _tensors(model: Path) -> dict[str, np.ndarray]:
    (weights,) = model.glob("*.safetensors")
    return load_file(str(weights))


def test_recipe_runs_under_plain_mergekit_and_equals_boom_merge(tuned, tmp_path: Path) -> None:
    from boom_merge.merging import merge_recipe

    _, out = tuned
    plain = tmp_path / "plain"
    run = subprocess.run([str(Path(sys.executable).parent / "mergekit-yaml"), str(out / "recipe.yml"), str(plain)],
                         capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    ours = merge_recipe(out / "recipe.yml", tmp_path / "ours")
    for other in (ours, out / "model"):
        a, b = _tensors(plain), _tensors(other)
        assert a.keys() == b.keys()
        assert all(np.array_equal(a[k], b[k]) for k in a)


def test_rerun_reuses_cached_scores_and_reselects(tuned, setup) -> None:
    base, members, corpus = setup
    _, out = tuned
    args = ["tune", *map(str, members), "--base", str(base), "--corpus", str(corpus), "-o", str(out),
            "--scales", "0.5,1", "--max-queries", "8", "--max-corpus", "10", "--objective", "id", "--force",
            "--device", "cpu"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "selection rule (id, fixed before scoring)" in result.output.splitlines()[0]
    assert "(0 scored now)" in result.output
    data = json.loads((out / "candidates.json").read_text())
    best = max(row["id_dev"] for row in data["candidates"])
    assert [r for r in data["candidates"] if r["key"] == data["chosen"]][0]["id_dev"] == best


def test_an_interrupted_tune_resumes(setup, tmp_path: Path) -> None:
    base, members, corpus = setup
    calls = []

    def scorer(model: Path) -> Scores:
        calls.append(model)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return Scores(0.5 + 0.01 * len(calls), 0.5, {})

    out, full = tmp_path / "tune", members[1]  # one member: base, the member, WiSE-FT at t = 0.5
    with pytest.raises(KeyboardInterrupt):
        tune([full], out, base=base, corpus=corpus, scales=(0.5, 1.0), scorer=scorer, progress=False)
    assert not out.exists() and len(json.loads((tmp_path / ".tune.tune-work" / "scores.json").read_text())["scores"]) == 1
    result = tune([full], out, base=base, corpus=corpus, scales=(0.5, 1.0), scorer=scorer, progress=False)
    assert (len(result.candidates), result.scored_now, len(calls)) == (3, 2, 4)
    assert (out / "recipe.yml").is_file() and not (tmp_path / ".tune.tune-work").exists()


def _recipe_identity(model: Path) -> tuple:
    """(member names, interpolation, weight scheme, scale) read back from a merged model's recipe."""
    import yaml

    recipe = yaml.safe_load((model / "boom_recipe.yml").read_text())
    names = frozenset(Path(m["model"]).name for m in recipe["models"])
    weights = {m["parameters"]["weight"] for m in recipe["models"]}
    params = recipe["parameters"]
    if params["scale"] == 0.0:
        return ("base",)
    scheme = "equal" if len(weights) == 1 else "ratio"
    return (names, params["interpolation"] if len(names) > 1 else "-", scheme, params["scale"])


def test_the_search_follows_its_stages(setup, tmp_path: Path) -> None:
    """Scores by hand: the soup of the two best members wins the bag, so the scale grid goes to the soup."""
    base, members, corpus = setup
    third = make_tiny_st(tmp_path / "member-2", seed=9, perturb_from=base, perturb_scale=0.03)
    (third / "boom_member.json").write_text(json.dumps({"kind": "member", "sample_ratio": 0.75,
                                                        "datasets": {name: {} for name in TRAIN}}))
    m0, m1, m2 = (frozenset([name]) for name in ("member-0", "member-1", "member-2"))
    every = m0 | m1 | m2
    table = {
        ("base",): 0.1, (m0, "-", "equal", 1.0): 0.5, (m1, "-", "equal", 1.0): 0.6, (m2, "-", "equal", 1.0): 0.4,
        (every, "slerp", "equal", 1.0): 0.55, (every, "slerp", "ratio", 1.0): 0.56,
        (every, "linear", "equal", 1.0): 0.50, (every, "linear", "ratio", 1.0): 0.52,
        (m0 | m1, "slerp", "ratio", 1.0): 0.65,  # greedy soup: m1, then m0 kept, m2 dropped (0.56)
        (m0 | m1, "slerp", "ratio", 0.5): 0.70,  # the scale grid on the soup: chosen
        (m1, "-", "equal", 0.5): 0.62,           # the WiSE-FT line
    }
    seen = []

    def scorer(model: Path) -> Scores:
        seen.append(_recipe_identity(model))
        return Scores(table[seen[-1]], table[seen[-1]], {})

    result = tune([*members, third], tmp_path / "out", base=base, corpus=corpus, scales=(0.5, 1.0), scorer=scorer,
                  progress=False)
    assert sorted(map(str, seen)) == sorted(map(str, table)) and len(seen) == len(table)
    assert result.label == "soup slerp ratio t=0.5 [member-0+member-1]"
    assert [(s.members, s.kept) for s in result.soup_steps] == [((1, 0), True), ((1, 0, 2), False)]


def test_bad_setups_are_one_line_errors(setup, tmp_path: Path) -> None:
    base, members, corpus = setup
    with pytest.raises(BoomError, match="no dev split for --in-domain omega"):
        tune(members, tmp_path / "o", base=base, corpus=corpus, in_domain=["omega"])
    with pytest.raises(BoomError, match="--full must be one of the members"):
        tune(members, tmp_path / "o", base=base, corpus=corpus, full=base)
    with pytest.raises(BoomError, match="would|input"):
        tune(members, members[0] / "tune", base=base, corpus=corpus)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("given", [["--in-domain", "alpha,omega"], ["--in-domain", "alpha", "--in-domain", "omega"]])
def test_in_domain_is_a_comma_list_or_repeated(setup, tmp_path: Path, given: list[str]) -> None:
    """As eval's --in-domain: both spellings name the same sources (the one missing is named alone)."""
    base, members, corpus = setup
    result = CliRunner().invoke(main, ["tune", *map(str, members), "--base", str(base), "--corpus", str(corpus),
                                       *given, "-o", str(tmp_path / "o")])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "no dev split for --in-domain omega\n" in result.output and "alpha" not in result.output
    assert not (tmp_path / "o").exists()


def test_tune_while_another_run_writes_the_same_out(setup, tmp_path: Path) -> None:
    """The search holds OUT's lock from the start: a second tune fails fast, never shares the work dir."""
    import fcntl
    import os

    base, members, corpus = setup
    seen = []
    fd = os.open(tmp_path / ".o.lock", os.O_RDWR | os.O_CREAT)  # the first run's lock
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(BoomError, match=f"another boom-merge is writing {tmp_path / 'o'}"):
            tune(members, tmp_path / "o", base=base, corpus=corpus, scorer=lambda m: seen.append(m), progress=False)
    finally:
        os.close(fd)
    assert seen == [] and not (tmp_path / ".o.tune-work").exists() and not (tmp_path / "o").exists()


def test_tune_help_has_examples_and_the_library_defaults() -> None:
    from boom_merge.cli.tune import tune_command
    from boom_merge.tune import DEFAULT_MAX_CORPUS, DEFAULT_MAX_QUERIES, DEFAULT_SCALES

    result = CliRunner().invoke(main, ["tune", "--help"])
    assert result.exit_code == 0 and "Examples:" in result.output and "--objective" in result.output
    defaults = {p.name: p.default for p in tune_command.params}
    assert (defaults["max_queries"], defaults["max_corpus"]) == (DEFAULT_MAX_QUERIES, DEFAULT_MAX_CORPUS)
    assert tuple(map(float, defaults["scales"].split(","))) == DEFAULT_SCALES


# --- seed soups: M full-data models of different seeds ----------------------------------


def test_seed_soup_recipe_is_the_uniform_average(tiny_bag, tmp_path: Path) -> None:
    from boom_merge.merging import merge_recipe
    from boom_merge.recipes import write_recipe

    _, seeds = tiny_bag  # stand-ins for full-data models trained with different seeds
    recipe = write_recipe(seeds[:3], tmp_path / "soup.yml", method="boom_linear", weights="equal")
    soup = merge_recipe(recipe, tmp_path / "soup")
    merged, inputs = _tensors(soup), [_tensors(s) for s in seeds[:3]]
    for key, value in merged.items():
        if np.issubdtype(value.dtype, np.floating):
            expected = np.mean([t[key].astype(np.float64) for t in inputs], axis=0)
            np.testing.assert_allclose(value, expected, atol=1e-6)


def test_members_and_base_as_hub_ids_tune_like_the_dirs(setup, tmp_path: Path, hub_cache: Path) -> None:
    """Hub ids resolve through the HF cache; the recipe names them id@commit (no cache path), the merge is the dirs'."""
    import yaml

    from tests.test_models import SHA, place_in_cache

    base, members, corpus = setup
    ids = [f"acme/member-{i}" for i in range(len(members))]
    for member, repo in zip(members, ids):
        place_in_cache(member, hub_cache, repo)
    place_in_cache(base, hub_cache, "acme/base")

    def scorer(model: Path) -> Scores:  # every candidate ties: the rule's tie-break picks the same in both runs
        return Scores(0.5, 0.5, {})

    options = dict(corpus=corpus, scales=(0.5, 1.0), scorer=scorer, progress=False, merge=True)
    by_dir = tune(members, tmp_path / "by-dir", base=base, **options)
    by_id = tune(ids, tmp_path / "by-id", base="acme/base", full=ids[1], **options)
    assert by_id.chosen.key == by_dir.chosen.key and len(by_id.candidates) == len(by_dir.candidates)
    assert by_id.label == by_dir.label.replace("member-", "acme/member-")  # labels name the ids
    recipe = yaml.safe_load((tmp_path / "by-id" / "recipe.yml").read_text())
    assert recipe["base_model"] == f"acme/base@{SHA}"
    assert {m["model"] for m in recipe["models"]} <= {f"{repo}@{SHA}" for repo in ids}
    for name in ("recipe.yml", "candidates.md", "model/boom_lineage.json", "model/README.md"):
        assert str(hub_cache) not in (tmp_path / "by-id" / name).read_text(), name
    a, b = _tensors(tmp_path / "by-dir" / "model"), _tensors(tmp_path / "by-id" / "model")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("defect", ["nan member", "member without tokenizer", "nan base"])
def test_a_refused_input_fails_before_scoring_and_leaves_no_work_dir(setup, tmp_path: Path, defect: str) -> None:
    """Issue 22.6: every member and the base are checked before the first candidate is scored."""
    import shutil

    from safetensors.numpy import save_file

    base, members, corpus = setup
    broken = Path(shutil.copytree(base if defect == "nan base" else members[1], tmp_path / "broken"))
    if defect == "member without tokenizer":
        for name in ("tokenizer.json", "vocab.txt"):
            (broken / name).unlink(missing_ok=True)
    else:
        state = load_file(str(broken / "model.safetensors"))
        state["embeddings.LayerNorm.weight"][0] = np.nan
        save_file(state, str(broken / "model.safetensors"))
    if defect != "nan base":
        (broken / "boom_member.json").write_text((members[1] / "boom_member.json").read_text())
    given = [members[0], broken] if defect != "nan base" else members
    seen = []
    with pytest.raises(BoomError) as error:
        tune(given, tmp_path / "o", base=broken if defect == "nan base" else base, corpus=corpus,
             scorer=lambda model: seen.append(model), progress=False)
    assert str(broken) in str(error.value) and ("NaN" in str(error.value) or "tokenizer" in str(error.value))
    assert seen == [] and not (tmp_path / ".o.tune-work").exists() and not (tmp_path / "o").exists()
