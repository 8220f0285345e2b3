"""The steps shared by the quickstart and the study: BLS member, data dirs, seed tables."""

from __future__ import annotations

import sys
from pathlib import Path
from statistics import fmean, stdev

import pytest

from boom_merge.errors import BoomError
from boom_merge.embedded_default import planned_full_data_member, training_data_dir

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from study import paired_deltas, seed_table, spread  # noqa: E402  (benchmarks/study.py: the study's tables)


@pytest.mark.parametrize(("ratios", "index"), [("40,60,80,100", 3), ("100,50", 0), ("paper5", 4)])
def test_full_data_member_is_the_100_percent_one(ratios: str, index: int) -> None:
    assert planned_full_data_member(ratios) == index


@pytest.mark.parametrize("ratios", ["40,60,80", "50,R"])
def test_a_bag_without_a_full_data_member_is_refused(ratios: str) -> None:
    with pytest.raises(BoomError, match="no 100 % member"):
        planned_full_data_member(ratios)


def test_training_data_dir_copies_only_the_chosen_domains(tmp_path) -> None:
    (tmp_path / "corpus/train").mkdir(parents=True)
    for name in ("a", "b", "c"):
        (tmp_path / f"corpus/train/{name}.jsonl").write_text(f'{{"query": "{name}", "pos": ["x"]}}\n')
    target = training_data_dir(tmp_path / "corpus", tmp_path / "data", ["a", "c"])
    assert sorted(p.name for p in target.iterdir()) == ["a.jsonl", "c.jsonl"]
    assert (target / "c.jsonl").read_text() == (tmp_path / "corpus/train/c.jsonl").read_text()
    with pytest.raises(BoomError, match="'z' was not built"):
        training_data_dir(tmp_path / "corpus", tmp_path / "other", ["a", "z"])
    assert not (tmp_path / "other").exists()  # nothing half-written


def test_spread_is_mean_and_sample_std_times_100() -> None:
    assert spread([0.5]) == "50.00"
    values = [0.81, 0.83, 0.86]
    assert spread(values) == f"{100 * fmean(values):.2f} ± {100 * stdev(values):.2f}"


ROWS = [
    {"model": "BLS", "seed": 0, "values": {"ID": 0.80, "OOD": 0.70}},
    {"model": "BLS", "seed": 1, "values": {"ID": 0.82, "OOD": 0.68}},
    {"model": "BOOM", "seed": 1, "values": {"ID": 0.83, "OOD": 0.71}},
    {"model": "BOOM", "seed": 0, "values": {"ID": 0.80, "OOD": 0.73}},
    {"model": "base", "seed": None, "values": {"ID": 0.75, "OOD": 0.72}},
]


def test_paired_deltas_pair_by_seed_not_by_position() -> None:
    boom = {0: {"ID": 0.80}, 1: {"ID": 0.83}}
    bls = {0: {"ID": 0.80}, 1: {"ID": 0.82}, 2: {"ID": 0.99}}
    assert paired_deltas(boom, bls, "ID") == pytest.approx([0.0, 0.01])
    assert paired_deltas({None: {"ID": 0.7}}, bls, "ID") == []  # an unseeded model pairs with nothing


def test_seed_table_against_a_hand_computation() -> None:
    table = seed_table(ROWS, ["ID", "OOD"], delta_columns=["OOD"])
    lines = table.strip().splitlines()
    assert lines[0] == "| model | seeds | ID | OOD | Δ OOD vs BLS |"
    # BOOM - BLS by seed: OOD 0.73 - 0.70 = +3, 0.71 - 0.68 = +3 -> 3.00 ± 0.00
    assert lines[3] == "| BOOM | 2 | 81.50 ± 2.12 | 72.00 ± 1.41 | 3.00 ± 0.00 |"
    assert lines[2] == "| BLS | 2 | 81.00 ± 1.41 | 69.00 ± 1.41 |  |"
    assert lines[4] == "| base | 1 | 75.00 | 72.00 |  |"
    assert "Δ" not in seed_table(ROWS, ["ID"], reference=None, delta_columns=["ID"])


def test_source_lists_follow_the_registry_roles() -> None:
    """The default's domain lists are the registry's roles: OOD dev sources are neither trained on nor OOD tests."""
    from boom_merge.data.corpora import sources_with_role
    from boom_merge.embedded_default import OOD_DEV_SOURCES, OOD_SOURCES, TRAIN_DOMAINS

    assert set(OOD_DEV_SOURCES) == set(sources_with_role("ood_dev"))
    assert set(OOD_SOURCES) <= set(sources_with_role("ood_test"))
    assert set(TRAIN_DOMAINS) <= set(sources_with_role("train"))
    assert not set(OOD_DEV_SOURCES) & (set(OOD_SOURCES) | set(TRAIN_DOMAINS))
