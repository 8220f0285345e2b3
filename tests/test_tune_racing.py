"""Racing never costs more encoding than the exhaustive search: each candidate encodes each dev text
once across its slice and full stages, with the numbers of ``--no-racing``; and racing is skipped
where it could drop nothing. Real MiniLM encodings, real tiny merges scored with MTEB."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from boom_merge.tune import Scores, tune
from boom_merge.tune.encodings import EncodingCache
from boom_merge.tune.race import droppable
from boom_merge.tune.scoring import DevScorer, dev_scorer, dev_tasks
from tests.test_tune import TableScorer, _recipe_identity, setup, three_members  # noqa: F401  (fixtures)

WORDS = "river stone cloud forest candle mirror garden ladder harbor violin pepper marble falcon silver".split()


def _texts(count: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(2, 40)))) for _ in range(count)]


def test_a_candidate_encodes_each_text_once_with_the_numbers_of_one_full_call(minilm_path: str) -> None:
    """The slice stage keeps its embeddings; the full stage encodes only the rest and returns what a
    fresh full encoding (no slice stage) returns, bit for bit: the texts are grouped alike in both."""
    from sentence_transformers import SentenceTransformer

    full = _texts(120, 0)
    in_slice = full[::4]
    fresh, raced = EncodingCache({None: frozenset(in_slice)}), EncodingCache({None: frozenset(in_slice)})

    def load(cache: EncodingCache, key: str | None, keep: bool) -> SentenceTransformer:
        model = SentenceTransformer(minilm_path, device="cpu")
        cache.attach(model, key, keep=keep)
        return model

    expected = load(fresh, None, False).encode(full, batch_size=16)
    assert fresh.encoded == len(full) and not fresh.kept
    cheap = load(raced, "cand", True).encode(in_slice, batch_size=16)
    assert raced.encoded == len(in_slice) and raced.kept_bytes == cheap.nbytes
    got = load(raced, "cand", False).encode([*full, full[1]], batch_size=16)  # a repeated text: encoded once
    assert raced.encoded == len(full)  # the slice's texts were not encoded again
    assert np.array_equal(got[:-1], expected) and np.array_equal(got[-1], expected[1])
    assert np.array_equal(got[::4][: len(in_slice)], cheap)
    plain = SentenceTransformer(minilm_path, device="cpu").encode(full, batch_size=16)
    assert np.allclose(plain, expected, atol=1e-5)  # grouping moves nothing but float rounding
    raced.forget("cand")
    assert raced.kept_bytes == 0 and not raced.kept
    # another prompt is another text: nothing kept is reused for it
    again = load(raced, "other", True)
    again.encode(in_slice, batch_size=16)
    again.encode(in_slice, batch_size=16, prompt="query: ")
    assert raced.encoded == len(full) + 2 * len(in_slice)


def test_a_text_two_tasks_share_never_brings_an_embedding_from_the_other_task(minilm_path: str) -> None:
    """Real dev sets share texts between sources. A text in task A's slice and in task B's full caps (not
    in B's slice) is encoded in B's own groups, as --no-racing encodes it: the same numbers, the same count."""
    from sentence_transformers import SentenceTransformer

    shared = " ".join(WORDS * 3)  # the longest text: it sets the padding of its batch
    a_full, b_full = [shared, *_texts(40, 1)], [*_texts(40, 2), shared]
    a_slice, b_slice = a_full[::4], b_full[:-1][::4]  # the shared text is in A's slice only
    assert shared in a_slice and shared not in b_slice
    slices = {"A": frozenset(a_slice), "B": frozenset(b_slice)}
    fresh, raced = EncodingCache(slices), EncodingCache(slices)

    def run(cache: EncodingCache, key: str | None, keep: bool, calls: dict[str, list[str]]) -> dict[str, np.ndarray]:
        model = SentenceTransformer(minilm_path, device="cpu")
        cache.attach(model, key, keep=keep)
        out = {}
        for task, texts in calls.items():
            cache.task = task
            out[task] = model.encode(texts, batch_size=8)
        return out

    expected = run(fresh, None, False, {"A": a_full, "B": b_full})
    run(raced, "cand", True, {"A": a_slice, "B": b_slice})
    got = run(raced, "cand", False, {"A": a_full, "B": b_full})
    assert raced.encoded == fresh.encoded == len(a_full) + len(b_full)
    for task in ("A", "B"):
        assert np.array_equal(got[task], expected[task]), task


def _encoded_per_candidate(scorer: DevScorer, stage: str) -> int:
    """Texts one candidate encodes at ``stage`` (the dev texts here are all distinct)."""
    return sum(len(task.dataset["default"][task.metadata.eval_splits[0]][part])
               for task in scorer.devset.tasks(stage) for part in ("queries", "corpus"))


def test_racing_encodes_no_more_than_the_exhaustive_search_and_resumes(setup, tmp_path: Path) -> None:
    """With the real scorer: racing encodes each candidate's full texts once (its slice's among them)
    and only the slice of a candidate raced out, so when it drops nothing it encodes exactly what
    --no-racing does; its full scores and choice are --no-racing's to the last bit; an interrupted
    race resumes to the same report."""
    base, members, corpus = setup
    tasks = dev_tasks(corpus, members, None, need_ood=True)
    options = dict(base=base, corpus=corpus, scales=(1.0,), progress=False)

    def scorer() -> DevScorer:
        return dev_scorer(corpus, tasks, max_queries=8, max_corpus=10, device="cpu")

    exhaustive_scorer, racing_scorer = scorer(), scorer()
    exhaustive = tune(members, tmp_path / "all", scorer=exhaustive_scorer, racing=False, **options)
    raced = tune(members, tmp_path / "raced", scorer=racing_scorer, **options)
    assert raced.racing and not exhaustive.racing
    full_texts, slice_texts = (_encoded_per_candidate(racing_scorer, stage) for stage in ("full", "slice"))
    assert slice_texts < full_texts
    n_all, n_full, n_out = len(exhaustive.candidates), len(raced.candidates), len(raced.raced_out)
    assert exhaustive_scorer.encodings.encoded == n_all * full_texts
    assert racing_scorer.encodings.encoded == n_full * full_texts + n_out * slice_texts
    if n_out == 0:
        assert racing_scorer.encodings.encoded == exhaustive_scorer.encodings.encoded
    assert racing_scorer.encodings.kept_bytes == sum(  # only raced-out candidates' slice embeddings are left
        v.nbytes for kept in racing_scorer.encodings.kept.values() for v in kept.values())
    assert set(racing_scorer.encodings.kept) <= {c.key for c, _ in raced.raced_out}
    everything = {c.key: s for c, s in exhaustive.candidates}
    for cand, scores in raced.candidates:
        assert scores.tasks == everything[cand.key].tasks, cand.key  # the same numbers, not close ones
    assert raced.chosen.key == exhaustive.chosen.key

    class Stopping(DevScorer):
        def score(self, model: Path, stage: str, *, key: str | None = None) -> Scores:
            if stage == "full":
                raise KeyboardInterrupt  # at the first full score (the bag choice, mid-search)
            return super().score(model, stage, key=key)

    stopped = Stopping(corpus, tasks, max_queries=8, max_corpus=10, device="cpu")
    with pytest.raises(KeyboardInterrupt):
        tune(members, tmp_path / "resumed", scorer=stopped, **options)
    cached = json.loads((tmp_path / ".resumed.tune-work" / "scores.json").read_text())
    assert not cached["scores"] and stopped.encodings.encoded == len(cached["slice"]) * slice_texts > 0
    again = scorer()
    resumed = tune(members, tmp_path / "resumed", scorer=again, **options)
    # the cached slice scores are not redone; their candidates' full stage encodes all its texts (the
    # embeddings kept in memory went with the interrupted run), the others' only what their slice did not
    assert n_full * full_texts <= again.encodings.encoded <= n_full * full_texts + n_out * slice_texts
    one, two = (json.loads((tmp_path / name / "candidates.json").read_text()) for name in ("raced", "resumed"))
    strip = ("merge_s", "eval_s", "profile", "merges")  # the interrupted candidate's slice merge went with it
    assert [{k: v for k, v in r.items() if k not in strip} for r in one["candidates"]] == \
        [{k: v for k, v in r.items() if k not in strip} for r in two["candidates"]]
    assert resumed.chosen.key == exhaustive.chosen.key


def test_droppable_counts_what_the_racing_rule_can_drop() -> None:
    assert droppable(2, guarded=2) == 0 and droppable(3, guarded=3) == 0
    assert droppable(9, guarded=3) == 6  # the top 3 may be the 3 guarded: 6 left
    assert droppable(14, guarded=3) == 14 - 5 and droppable(4, guarded=3, keep=1.0) == 0
    assert droppable(4, guarded=0, keep=0.0) == 3  # the leader stays


class CountingScorer(TableScorer):
    """A racing table scorer that also says how many slice queries its dev sources have."""

    def __init__(self, table: dict, queries: int) -> None:
        super().__init__(table)
        self.queries = queries

    def slice_queries(self) -> int:
        return self.queries


def test_racing_that_could_drop_nothing_is_skipped_and_scores_each_candidate_once(three_members,
                                                                                     tmp_path: Path) -> None:
    base, members, corpus, table = three_members
    lines: list[str] = []
    options = dict(base=base, corpus=corpus, progress=False, echo=lines.append)
    # one member, t = 1 only: the base and the member, both guarded
    one = CountingScorer(table, queries=25)
    result = tune(members[1:2], tmp_path / "one", scorer=one, scales=(1.0,), full=members[1], **options)
    assert not result.racing and [stage for stage, _ in one.calls] == ["full", "full"]
    assert any(line.startswith("racing skipped, the exhaustive search: at most 2 candidates") for line in lines)
    data = json.loads((tmp_path / "one" / "candidates.json").read_text())
    assert data["racing"] is None and "slice" not in data and data["racing_skipped"].startswith("at most 2")
    assert "Racing skipped, the exhaustive search: at most 2 candidates" in (tmp_path / "one" / "candidates.md").read_text()
    # a slice of one query per dev source: no margin to race on
    few = CountingScorer(table, queries=1)
    result = tune(members, tmp_path / "few", scorer=few, scales=(0.5, 1.0), **options)
    assert not result.racing and {stage for stage, _ in few.calls} == {"full"}
    assert len(few.calls) == len({identity for _, identity in few.calls}) == len(result.candidates)
    assert "no margin to race on" in lines[-1]
    # two queries: it races (and drops, as in test_tune's constructed case)
    enough = CountingScorer(table, queries=2)
    result = tune(members, tmp_path / "enough", scorer=enough, scales=(0.5, 1.0), **options)
    assert result.racing and result.raced_out


def test_the_greedy_soup_takes_no_step_on_slice_noise(three_members, tmp_path: Path) -> None:
    """On the slice, member-0 looks a hair better than member-1 (within the racing margin) and their soup
    ties member-1 alone; the full scores say otherwise. Racing's greedy soup orders and steps on the full
    scores there, so it takes the exhaustive search's path and choice."""
    base, members, corpus, table = three_members
    m0, m1 = frozenset(["member-0"]), frozenset(["member-1"])
    options = dict(base=base, corpus=corpus, scales=(0.5, 1.0), progress=False)
    everything = tune(members, tmp_path / "all", scorer=TableScorer(table), racing=False, **options)
    noisy = {(m0, "-", "equal", 1.0): 0.6105, (m1, "-", "equal", 1.0): 0.61, (m0 | m1, "slerp", "ratio", 1.0): 0.61}
    raced = tune(members, tmp_path / "raced", scorer=TableScorer(table, slice_table=noisy), **options)
    steps = [(s.members, s.kept) for s in raced.soup_steps]
    assert steps == [(s.members, s.kept) for s in everything.soup_steps] == [((1, 0), True), ((1, 0, 2), False)]
    assert raced.chosen.key == everything.chosen.key and raced.label == "soup slerp ratio t=0.5 [member-0+member-1]"
