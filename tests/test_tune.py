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


def test_full_data_member_is_ratio_1_without_replacement(tmp_path: Path) -> None:
    from boom_merge.tune.run import full_data_member

    members = []
    for i, (ratio, mode) in enumerate([(0.5, None), (1.0, "bootstrap"), (1.0, None), (1.0, "without_replacement")]):
        member = tmp_path / f"m{i}"
        member.mkdir()
        manifest = {"kind": "member", "sample_ratio": ratio, "seed": 0, **({"mode": mode} if mode else {})}
        (member / "boom_member.json").write_text(json.dumps(manifest), encoding="utf-8")
        members.append(member)
    assert full_data_member(members) == 2  # a bootstrap draw at ratio 1 is not the full data
    assert full_data_member([members[3]]) == 0
    with pytest.raises(BoomError, match="no full-data member"):
        full_data_member(members[:2])


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
    from boom_merge.merge.pipeline import merge_recipe

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


@pytest.fixture()
def three_members(setup, tmp_path: Path) -> tuple[Path, list[Path], Path, dict]:
    """A third member and each candidate's dev objective by hand: the soup of the two best members
    beats the bag, so the scale grid goes to the soup."""
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
    return base, [*members, third], corpus, table


def test_the_search_follows_its_stages(three_members, tmp_path: Path) -> None:
    """The exhaustive search scores exactly the candidates of its stages, and the soup at t = 0.5 wins."""
    base, members, corpus, table = three_members
    seen = []

    def scorer(model: Path) -> Scores:  # no slice: the exhaustive search
        seen.append(_recipe_identity(model))
        return Scores(table[seen[-1]], table[seen[-1]], {})

    result = tune(members, tmp_path / "out", base=base, corpus=corpus, scales=(0.5, 1.0), scorer=scorer,
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


def test_the_base_as_a_member_or_a_member_twice_is_refused_before_any_work(setup, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """One line naming the input the user typed, nothing written, nothing scored (not the merge's
    refusal of a recipe tune wrote, after the search started)."""
    base, members, corpus = setup
    monkeypatch.chdir(members[0].parent)
    seen: list = []
    for given, message in [([*members[:2], members[0].name], f"{members[0].name}: member given twice (also as "),
                           ([*members, base], f"{base}: the base is also given as a member ({base})")]:
        result = CliRunner().invoke(main, ["tune", *map(str, given), "--base", str(base), "--corpus", str(corpus),
                                           "-o", str(tmp_path / "o")])
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        assert [line for line in result.output.splitlines() if line.startswith("Error:")] == \
            [line for line in result.output.splitlines() if message in line], result.output
        with pytest.raises(BoomError, match="given"):
            tune(given, tmp_path / "o", base=base, corpus=corpus, scorer=lambda m: seen.append(m), progress=False)
    assert seen == [] and not (tmp_path / "o").exists() and not (tmp_path / ".o.tune-work").exists()


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
    from boom_merge.merge.pipeline import merge_recipe
    from boom_merge.merge.recipe_writing import write_recipe

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


def _float_dtypes(model: Path) -> set[str]:
    """The stored dtypes of a model's floating tensors, read from its safetensors header."""
    from safetensors import safe_open

    (weights,) = model.glob("*.safetensors")
    with safe_open(str(weights), "pt") as f:
        stored = {f.get_slice(name).get_dtype() for name in f.keys()}  # noqa: SIM118 - not a dict
    return stored & {"F64", "F32", "BF16", "F16"}


def test_tuned_recipes_keep_the_members_dtype(setup, tmp_path: Path) -> None:
    """bf16 members are scored and written as bf16 merges (the pipeline's one dtype rule, no float32 in
    the recipe); float32 members merge exactly as a recipe asking for float32 did."""
    import shutil

    import torch
    import yaml
    from sentence_transformers import SentenceTransformer

    from boom_merge.merge.pipeline import merge_recipe

    base, members, corpus = setup

    def bf16(model: Path) -> Path:
        target = tmp_path / "bf16" / model.name
        SentenceTransformer(str(model), device="cpu").to(torch.bfloat16).save(str(target))
        if (model / "boom_member.json").is_file():
            shutil.copy(model / "boom_member.json", target)
        return target

    scored: list[set[str]] = []

    def scorer(model: Path) -> Scores:
        scored.append(_float_dtypes(model))
        return Scores(0.5, 0.5, {})

    bf16_members = [bf16(m) for m in members]
    assert _float_dtypes(bf16_members[0]) == {"BF16"}
    tune(bf16_members, tmp_path / "out", base=bf16(base), corpus=corpus, scales=(0.5, 1.0), scorer=scorer,
         progress=False, merge=True)
    assert scored and all(found == {"BF16"} for found in scored)
    recipe = yaml.safe_load((tmp_path / "out" / "recipe.yml").read_text())
    assert "out_dtype" not in recipe and "dtype" not in recipe
    assert _float_dtypes(tmp_path / "out" / "model") == {"BF16"}

    written = recipe_of(candidate("bag", [0, 1], scale=0.5), members, base)
    (tmp_path / "now.yml").write_text(yaml.safe_dump(written))
    (tmp_path / "float32.yml").write_text(yaml.safe_dump({**written, "out_dtype": "float32"}))
    now, before = (_tensors(merge_recipe(tmp_path / f"{name}.yml", tmp_path / name)) for name in ("now", "float32"))
    assert now.keys() == before.keys() and all(np.array_equal(now[k], before[k]) for k in now)


# --- racing: the margin, the rule, and a raced search against the exhaustive one --------

from boom_merge.tune.race import paired_margin, race  # noqa: E402


def _per_query(values: list[float], side: str = "id", task: str = "T") -> dict:
    return {side: {task: {f"q{i}": v for i, v in enumerate(values)}}}


def test_paired_margin_against_a_hand_computation() -> None:
    leader = Scores(0.6, 0.5, per_query={**_per_query([0.9, 0.7, 0.5, 0.3]), **_per_query([1.0, 0.0], "ood", "U")})
    other = Scores(0.5, 0.4, per_query={**_per_query([0.8, 0.7, 0.3, 0.3]), **_per_query([0.5, 0.3], "ood", "U")})
    # ID diffs .1 0 .2 0: variance (ddof 1) = .009167; OOD diffs .5 -.3: variance .32
    id_var, ood_var = np.var([0.1, 0, 0.2, 0], ddof=1) / 4, np.var([0.5, -0.3], ddof=1) / 2
    assert paired_margin(leader, other, "balanced", z=2) == pytest.approx(2 * np.sqrt(0.25 * id_var + 0.25 * ood_var))
    assert paired_margin(leader, other, "id", z=1) == pytest.approx(np.sqrt(id_var))
    assert paired_margin(leader, Scores(0.5, 0.4), "balanced") == 0.0  # no per-query scores: no margin


def test_race_drops_only_the_clearly_behind_outside_the_top_third_and_the_guarded() -> None:
    noise = [0.01, -0.01, 0.02, -0.02, 0.0, 0.01, -0.01, 0.0]

    def scores(level: float, wobble: float = 1.0) -> Scores:
        values = [level + wobble * n for n in noise]
        return Scores(level, level, per_query={**_per_query(values), **_per_query(values, "ood", "U")})

    table = [
        (candidate("base", [1], scale=0.0, order=0), scores(0.30)),           # far behind, guarded
        (candidate("member", [0], order=1), scores(0.40)),                    # far behind: out
        (candidate("member", [1], order=2), scores(0.35)),                    # far behind, guarded
        (candidate("bag", [0, 1], order=3), scores(0.45)),                    # far behind, guarded
        (candidate("bag", [0, 1], weights="ratio", order=4), scores(0.60)),   # the leader
        (candidate("bag", [0, 1], scale=0.5, order=5), scores(0.595)),        # second: the top share
        (candidate("bag", [0, 1], scale=0.75, order=6), scores(0.592, -1.0)),  # close behind: within the margin
        (candidate("wise_ft", [1], scale=0.5, order=7), scores(0.35)),        # far behind: out
    ]
    guarded = {table[0][0].key: "the base", table[3][0].key: "the plain bag", table[2][0].key: "the best WiSE-FT point"}
    marks = race(table, "balanced", keep=0.2, guarded=guarded)  # the top 2 of 8
    kept = {c.describe(["a", "b"]): marks[c.key].kept for c, _ in table}
    assert kept == {"base": True, "a": False, "b": True, "bag slerp equal t=1 [a+b]": True,
                    "bag slerp ratio t=1 [a+b]": True, "bag slerp equal t=0.5 [a+b]": True,
                    "bag slerp equal t=0.75 [a+b]": True, "WiSE-FT b t=0.5": False}
    reasons = [marks[c.key].reason for c, _ in table]
    assert reasons == ["the base", "behind by more than the margin", "the best WiSE-FT point", "the plain bag",
                       "the slice leader", "top 2 on the slice", "within the margin", "behind by more than the margin"]
    close = marks[table[6][0].key]
    assert close.behind == pytest.approx(0.008) and close.margin > close.behind
    assert marks[table[1][0].key].behind == pytest.approx(0.2) and marks[table[1][0].key].margin < 0.05
    assert race(table, "balanced", keep=0.2, guarded={})[table[0][0].key].kept is False  # unguarded: out


class TableScorer:
    """A racing scorer from a table of full objectives: the slice adds 0.01 (an easier task; or
    takes ``slice_table``'s value) and per-query wobble that differs by candidate, so the margins
    are real; counts every call."""

    def __init__(self, table: dict, slice_table: dict | None = None) -> None:
        self.table, self.slice_table, self.calls = table, slice_table or {}, []

    def _scores(self, model: Path, stage: str) -> Scores:
        identity = _recipe_identity(model)
        self.calls.append((stage, identity))
        value = self.slice_table.get(identity, self.table[identity] + 0.01) if stage == "slice" else self.table[identity]
        phase = (sum(map(ord, str(identity))) % 13) / 13
        per_query = [value + 0.01 * np.sin(i + 7 * phase) for i in range(20)]
        return Scores(value, value, {}, per_query={**_per_query(per_query), **_per_query(per_query, "ood", "U")})

    def __call__(self, model: Path, *, key: str | None = None) -> Scores:
        return self._scores(model, "full")

    def slice(self, model: Path, *, key: str | None = None) -> Scores:
        return self._scores(model, "slice")


def test_racing_drops_the_clearly_worse_and_chooses_as_the_exhaustive_search(three_members, tmp_path: Path,
                                                                             monkeypatch) -> None:
    import boom_merge.merge.pipeline

    base, members, corpus, table = three_members
    options = dict(base=base, corpus=corpus, scales=(0.5, 1.0), progress=False)
    exhaustive = TableScorer(table)
    everything = tune(members, tmp_path / "all", scorer=exhaustive, racing=False, **options)
    merges = []
    run_recipe = boom_merge.merge.pipeline.run_recipe
    monkeypatch.setattr(boom_merge.merge.pipeline, "run_recipe", lambda *a, **k: merges.append(a[1]) or run_recipe(*a, **k))
    raced_scorer = TableScorer(table)
    raced = tune(members, tmp_path / "raced", scorer=raced_scorer, **options)
    assert len(merges) == len(everything.candidates)  # the slice's merges are kept for the full stage
    assert raced.chosen.key == everything.chosen.key and raced.label == "soup slerp ratio t=0.5 [member-0+member-1]"
    assert (raced.scores.id_dev, raced.scores.ood_dev) == (everything.scores.id_dev, everything.scores.ood_dev)
    out = {c.describe(["member-0", "member-1", "member-2"]) for c, _ in raced.raced_out}
    assert {"member-0", "member-2", "bag linear equal t=1 [member-0+member-1+member-2]"} <= out
    assert {"base", "bag slerp equal t=1 [member-0+member-1+member-2]", "WiSE-FT member-1 t=0.5"}.isdisjoint(out)
    full_calls = [call for call in raced_scorer.calls if call[0] == "full"]
    assert len(full_calls) == len(raced.candidates) < len(everything.candidates)
    assert len(raced.candidates) + len(raced.raced_out) == len(everything.candidates)
    assert len(raced_scorer.calls) == len(raced.candidates) + len(everything.candidates)  # each stage once
    # the report: every candidate, raced-out ones marked with their slice scores, the profile columns
    data = json.loads((tmp_path / "raced" / "candidates.json").read_text())
    rows = {row["label"]: row for row in data["candidates"]}
    assert len(rows) == len(everything.candidates) and data["racing"]["fraction"] == 0.25
    dropped = rows["member-2"]
    assert dropped["racing"]["raced_out"] and dropped["objective"] is None
    assert (dropped["racing"]["last_stage"], rows["base"]["racing"]["last_stage"]) == ("slice0.25s0", "full")
    assert dropped["racing"]["slice_objective"] == pytest.approx(0.41)
    assert dropped["racing"]["behind"] > dropped["racing"]["margin"] > 0
    assert not rows["base"]["racing"]["raced_out"] and rows["base"]["racing"]["reason"] == "the base"
    assert rows["base"]["objective"] == pytest.approx(0.1) and set(rows["base"]["profile"]) >= {"merge", "encode"}
    md = (tmp_path / "raced" / "candidates.md").read_text()
    assert "| member-2 | n/a | n/a | n/a | 41.00 |" in md and "raced out after the 25% slice: behind by more than the margin" in md
    assert "Racing (fixed before scoring)" in md and "merge s | load s | tokenize s | encode s" in md
    all_rows = json.loads((tmp_path / "all" / "candidates.json").read_text())["candidates"]
    assert all("racing" not in row and row["objective"] is not None for row in all_rows)


def test_a_survivor_is_merged_again_only_where_the_disk_has_no_room_to_keep_its_slice_merge(
        three_members, tmp_path: Path, monkeypatch) -> None:
    """Racing keeps slice merges for the full stage within half the space free beside OUT when the
    search begins (a 0.6B-8B survivor is renamed, not merged twice, where the disk allows); with no
    room, each survivor is merged again, and the report counts every merge."""
    import shutil

    import boom_merge.merge.pipeline

    base, members, corpus, table = three_members
    options = dict(base=base, corpus=corpus, scales=(0.5, 1.0), progress=False)
    merges: list[Path] = []
    run_recipe = boom_merge.merge.pipeline.run_recipe
    monkeypatch.setattr(boom_merge.merge.pipeline, "run_recipe", lambda *a, **k: merges.append(a[1]) or run_recipe(*a, **k))
    roomy = tune(members, tmp_path / "roomy", scorer=TableScorer(table), **options)
    planned = len(roomy.candidates) + len(roomy.raced_out)
    assert len(merges) == planned  # one merge per candidate: every survivor took its slice merge
    rows = json.loads((tmp_path / "roomy" / "candidates.json").read_text())
    assert rows["cost"]["merges"] == planned and {r["merges"] for r in rows["candidates"]} == {1}

    asked = []
    disk_usage = shutil.disk_usage

    def full_disk(path):
        asked.append(Path(path))
        return disk_usage(path)._replace(free=1000)  # room for no merge

    monkeypatch.setattr(shutil, "disk_usage", full_disk)
    merges.clear()
    tight = tune(members, tmp_path / "tight", scorer=TableScorer(table), **options)
    assert asked == [tmp_path / ".tight.tune-work"]  # once, where the merges are written
    assert tight.chosen.key == roomy.chosen.key
    assert len(merges) == planned + len(tight.candidates)  # each survivor merged again for the full stage
    data = json.loads((tmp_path / "tight" / "candidates.json").read_text())
    per_row = {r["label"]: r["merges"] for r in data["candidates"]}
    out = {c.describe(["member-0", "member-1", "member-2"]) for c, _ in tight.raced_out}
    assert out and all(per_row[label] == (1 if label in out else 2) for label in per_row)
    assert data["cost"]["merges"] == len(merges)
    assert f"{len(merges)} merges in " in (tmp_path / "tight" / "candidates.md").read_text()
    assert not (tmp_path / ".tight.tune-work").exists()


def test_racing_is_deterministic_and_resumes(three_members, tmp_path: Path) -> None:
    base, members, corpus, table = three_members
    options = dict(base=base, corpus=corpus, scales=(0.5, 1.0), progress=False)
    first = tune(members, tmp_path / "one", scorer=TableScorer(table), **options)

    class Interrupted(TableScorer):
        def _scores(self, model: Path, stage: str) -> Scores:
            if stage == "full" and sum(call[0] == "full" for call in self.calls) == 3:
                raise KeyboardInterrupt  # in the full-cap stage, after the slice work
            return super()._scores(model, stage)

    stopped = Interrupted(table)
    with pytest.raises(KeyboardInterrupt):
        tune(members, tmp_path / "two", scorer=stopped, **options)
    resumed = TableScorer(table)
    second = tune(members, tmp_path / "two", scorer=resumed, **options)
    assert len(stopped.calls) - 1 + len(resumed.calls) == second.scored_now + len(stopped.calls) - 1
    assert not any(call in stopped.calls[:-1] for call in resumed.calls)  # nothing scored twice
    assert second.chosen.key == first.chosen.key
    one, two = (json.loads((tmp_path / name / "candidates.json").read_text()) for name in ("one", "two"))
    strip = ("merge_s", "eval_s", "profile", "merges")  # the interrupted candidate's slice merge went with it
    assert [{k: v for k, v in r.items() if k not in strip} for r in one["candidates"]] == \
        [{k: v for k, v in r.items() if k not in strip} for r in two["candidates"]]


def test_no_racing_flag_scores_every_candidate_on_the_full_caps(setup, tmp_path: Path) -> None:
    base, members, corpus = setup
    args = ["tune", *map(str, members), "--base", str(base), "--corpus", str(corpus), "--scales", "1",
            "--max-queries", "8", "--max-corpus", "10", "--device", "cpu"]
    raced = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "raced")])
    assert raced.exit_code == 0, raced.output
    assert "racing (fixed before scoring)" in raced.output and "raced out on the slice" in raced.output
    data = json.loads((tmp_path / "raced" / "candidates.json").read_text())
    assert all("racing" in row for row in data["candidates"]) and data["slice"]
    plain = CliRunner().invoke(main, [*args, "--no-racing", "-o", str(tmp_path / "plain")])
    assert plain.exit_code == 0, plain.output
    assert "Racing (fixed" not in plain.output and "racing (fixed" not in plain.output
    data = json.loads((tmp_path / "plain" / "candidates.json").read_text())
    assert data["racing"] is None and all(row["objective"] is not None for row in data["candidates"])


# --- the dev scorer: MTEB's numbers, once-per-search data, the slice -----------------


def test_dev_scorer_equals_eval_and_reuses_tokenization(setup, tmp_path: Path) -> None:
    """Scores equal `boom-merge eval`'s on the dev splits (an independent path: mteb.evaluate, files);
    a second model with the same tokenizer tokenizes nothing; the slice is a seeded subset."""
    from statistics import fmean

    from boom_merge.evaluation import evaluate_models
    from boom_merge.tune.scoring import dev_scorer, dev_tasks

    base, members, corpus = setup
    tasks = dev_tasks(corpus, members, None, need_ood=True)
    scorer = dev_scorer(corpus, tasks, max_queries=8, max_corpus=10, device="cpu")
    first, second = scorer(members[0]), scorer(members[1])
    again = scorer(members[0])
    assert again.tasks == first.tasks and first.profile["tokenize"] > 0 and again.profile["tokenize"] == 0
    summary = evaluate_models(members, tmp_path / "eval", corpus=corpus, split="dev", tasks=["alpha", "beta", "gamma"],
                              in_domain=["alpha", "beta"], max_queries=8, max_corpus=10, labels=["m0", "m1"],
                              progress=False, device="cpu")
    assert first.tasks == summary.scores["m0"] and second.tasks == summary.scores["m1"]
    assert set(first.per_query) == {"id", "ood"} and len(first.per_query["id"]["BoomAlphaRetrieval"]) == 8
    for side in first.per_query.values():  # the task score is the mean of its per-query scores
        for task, per_query in side.items():
            assert fmean(per_query.values()) == pytest.approx(first.tasks[task], abs=1e-5)
    cheap = scorer.slice(members[0])
    assert len(cheap.per_query["id"]["BoomAlphaRetrieval"]) == 2  # ceil(8 / 4)
    assert set(cheap.per_query["id"]["BoomAlphaRetrieval"]) <= set(first.per_query["id"]["BoomAlphaRetrieval"])
    assert {"load", "tokenize", "encode", "scoring", "mteb"} <= set(cheap.profile)


def test_slice_ids_are_seeded_subsets_that_keep_the_relevant_documents() -> None:
    from boom_merge.tune.devset import SliceSpec, slice_ids

    queries = [f"q{i}" for i in range(40)]
    docs = [f"d{i}" for i in range(200)]
    qrels = {f"q{i}": {f"d{2 * i}": 1, f"d{2 * i + 1}": 1} for i in range(40)}
    spec = SliceSpec(0.25, seed=0)
    kept_q, kept_d = slice_ids("alpha", queries, docs, qrels, spec)
    assert (len(kept_q), len(kept_d)) == (10, 50)
    assert kept_q == sorted(kept_q, key=queries.index) and kept_d == sorted(kept_d, key=docs.index)
    assert {doc for q in kept_q for doc in qrels[q]} <= set(kept_d)
    assert slice_ids("alpha", queries, docs, qrels, spec) == (kept_q, kept_d)
    assert slice_ids("beta", queries, docs, qrels, spec)[0] != kept_q  # each source its own draw
    assert slice_ids("alpha", queries, docs, qrels, SliceSpec(0.25, seed=1))[0] != kept_q
    with pytest.raises(BoomError, match="fraction"):
        SliceSpec(0.0)


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
