"""Bagging sampler properties: counts, repeats, disjoint complements, seeding."""

from __future__ import annotations

import hashlib
import math
from collections import Counter

import pytest

from boom_merge.data.sampling import ids_sha256, member_sample, parse_ratios, plan_members, sample_count, sample_ids
from boom_merge.errors import BoomError

SIZES = {"nli": 1000, "msmarco": 337, "tiny": 3, "one": 1}


@pytest.mark.parametrize("ratio", [0.2, 0.4, 0.6, 0.8, 1.0, 0.37])
def test_without_replacement_counts_and_no_repeats(ratio: float) -> None:
    sample = sample_ids(SIZES, ratio, seed=7)
    for name, size in SIZES.items():
        ids = sample[name]
        expected = max(1, int(math.floor(ratio * size + 0.5)))
        assert len(ids) == expected, name
        assert len(set(ids)) == len(ids)
        assert all(0 <= i < size for i in ids)


def test_full_ratio_takes_everything() -> None:
    assert sample_ids(SIZES, 1.0, seed=3) == {name: list(range(size)) for name, size in SIZES.items()}


def test_bootstrap_repeats_and_counts() -> None:
    sample = sample_ids({"nli": 1000}, 1.0, seed=11, mode="bootstrap")["nli"]
    assert len(sample) == 1000
    distinct = len(set(sample))
    # a bootstrap sample of n holds about (1 - 1/e) n distinct items; 1000 draws: sd about 15
    assert abs(distinct - 1000 * (1 - math.exp(-1))) < 60
    assert max(Counter(sample).values()) >= 2


@pytest.mark.parametrize("spec", ["50,R", "30,R", "75,r"])
def test_complement_is_disjoint_and_covers(spec: str) -> None:
    first, second = plan_members(spec, seed=5)
    a, b = member_sample(first, SIZES), member_sample(second, SIZES)
    share = float(spec.split(",")[0]) / 100
    for name, size in SIZES.items():
        assert not set(a[name]) & set(b[name])
        assert sorted(a[name] + b[name]) == list(range(size))
        assert len(a[name]) == math.floor(share * size + 0.5)
    assert first.seed != second.seed and first.sample_seed == second.sample_seed
    assert (first.name, second.name) == (f"member-0-r{round(share * 100)}", f"member-1-r{round(100 - share * 100)}")


def test_same_seed_same_sample_different_seed_differs() -> None:
    assert sample_ids(SIZES, 0.4, seed=1) == sample_ids(SIZES, 0.4, seed=1)
    assert sample_ids(SIZES, 0.4, seed=1)["nli"] != sample_ids(SIZES, 0.4, seed=2)["nli"]
    members = plan_members("40,40,40", seed=9)
    samples = [member_sample(m, SIZES)["nli"] for m in members]
    assert len({m.seed for m in members}) == 3
    assert samples[0] != samples[1] != samples[2] != samples[0]


def test_adding_a_dataset_keeps_other_samples() -> None:
    before = sample_ids({"nli": 1000}, 0.4, seed=1)
    after = sample_ids({"aaa": 50, "nli": 1000}, 0.4, seed=1)
    assert after["nli"] == before["nli"]


def test_parse_ratios() -> None:
    assert parse_ratios("40,60,80,100") == ([0.4, 0.6, 0.8, 1.0], False)
    assert parse_ratios("paper4") == ([0.4, 0.6, 0.8, 1.0], False)
    assert parse_ratios("paper5") == ([0.2, 0.4, 0.6, 0.8, 1.0], False)
    assert parse_ratios(" 50, R ") == ([0.5, 0.5], True)
    assert [m.ratio for m in plan_members("paper5", seed=0)] == [0.2, 0.4, 0.6, 0.8, 1.0]
    assert [m.name for m in plan_members("paper4", seed=0)] == [
        "member-0-r40",
        "member-1-r60",
        "member-2-r80",
        "member-3-r100",
    ]


@pytest.mark.parametrize("spec", ["", "40,,60", "0,50", "120", "abc", "R", "40,60,R", "100,R"])
def test_bad_ratio_specs(spec: str) -> None:
    with pytest.raises(BoomError):
        parse_ratios(spec)


def test_complement_refuses_bootstrap_and_bad_sampling() -> None:
    with pytest.raises(BoomError, match="complement"):
        plan_members("50,R", seed=0, sampling="bootstrap")
    with pytest.raises(BoomError, match="sampling"):
        plan_members("50", seed=0, sampling="jackknife")


def test_ids_sha256_matches_hashlib() -> None:
    assert ids_sha256([3, 1, 20]) == hashlib.sha256(b"3\n1\n20\n").hexdigest()
    assert sample_count(0, 0.5) == 0 and sample_count(3, 0.2) == 1 and sample_count(5, 0.5) == 3
