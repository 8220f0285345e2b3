"""Training data loader: FlagEmbedding jsonl, HF datasets, bad lines, empty and duplicate data.

Other formats and column conventions: tests/test_data_formats.py.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from click.testing import CliRunner

from boom_merge.cli import main
from boom_merge.data.loading import Example, load_training_data, scan_training_data
from boom_merge.errors import BoomError

GOOD = [
    {
        "query": "What does a thermometer measure?",
        "pos": ["A thermometer measures temperature."],
        "neg": ["A barometer measures air pressure.", "A hygrometer measures humidity."],
    },
    {
        "query": "capital of France",
        "pos": ["Paris is the capital and largest city of France."],
        "prompt": "Find the answer: ",
    },
    {
        "query": "Who wrote Hamlet?",
        "pos": ["Hamlet is a tragedy written by William Shakespeare.", "Shakespeare wrote Hamlet around 1600."],
        "type": "qa",
    },
]


def _write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_reads_flagembedding_jsonl(tmp_path: Path) -> None:
    _write(tmp_path / "qa.jsonl", [json.dumps(r) for r in GOOD])
    _write(tmp_path / "other.jsonl", ["", json.dumps(GOOD[0]), "   "])
    data = load_training_data(tmp_path)
    assert sorted(data) == ["other", "qa"]
    assert data["qa"][0] == Example(
        id=1, query=GOOD[0]["query"], pos=tuple(GOOD[0]["pos"]), neg=tuple(GOOD[0]["neg"]), prompt=None, type=None
    )
    assert data["qa"][1].prompt == "Find the answer: " and data["qa"][1].neg == ()
    assert data["qa"][2].type == "qa" and len(data["qa"][2].pos) == 2
    assert [e.id for e in data["other"]] == [2]  # blank lines keep line numbers


BAD_LINES = [
    ('{"query": "x", "pos": ["y"]', "invalid JSON"),
    ('["query", "pos"]', "expected a JSON object"),
    ('{"query": "", "pos": ["y"]}', "'query' must be a non-empty string"),
    ('{"query": "q", "pos": []}', "'pos' must hold at least one text"),
    ('{"query": "q", "pos": "single string"}', "'pos' must be a list"),
    ('{"query": "q", "pos": ["p"], "neg": [3]}', "'neg' must be a list"),
    ('{"query": "q", "pos": ["p"], "prompt": 5}', "'prompt' must be a string"),
]


@pytest.mark.parametrize(("line", "reason"), BAD_LINES)
def test_bad_line_fails_with_file_and_line_number(tmp_path: Path, line: str, reason: str) -> None:
    file = _write(tmp_path / "qa.jsonl", [json.dumps(GOOD[0]), json.dumps(GOOD[1]), line, json.dumps(GOOD[2])])
    with pytest.raises(BoomError) as error:
        load_training_data(tmp_path)
    message = str(error.value)
    assert message.startswith(f"{file}: line 3: ") and reason in message
    assert "\n" not in message


def test_skip_keeps_every_good_line_and_reports(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    lines, good_numbers = [], []
    for i in range(30):
        if i % 4 == 1:
            lines.append(BAD_LINES[i % len(BAD_LINES)][0])
        else:
            lines.append(json.dumps({"query": f"query number {i}", "pos": [f"passage number {i}"]}))
            good_numbers.append(i + 1)
    file = _write(tmp_path / "mixed.jsonl", lines)
    with caplog.at_level(logging.WARNING):
        datasets = scan_training_data(tmp_path, on_bad_line="skip")
    examples = datasets["mixed"].examples
    assert [e.id for e in examples] == good_numbers
    assert [e.query for e in examples] == [f"query number {n - 1}" for n in good_numbers]
    assert [n for n, _ in datasets["mixed"].bad_lines] == [n for n in range(1, 31) if n not in good_numbers]
    assert f"{file}: skipped 8 bad line(s): line 2: " in caplog.text


def test_empty_dataset_is_reported_and_left_out(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _write(tmp_path / "qa.jsonl", [json.dumps(GOOD[0])])
    _write(tmp_path / "empty.jsonl", [])
    _write(tmp_path / "allbad.jsonl", ["not json"])
    with caplog.at_level(logging.WARNING):
        data = load_training_data(tmp_path, on_bad_line="skip")
    assert list(data) == ["qa"]
    assert "dataset 'empty' is empty" in caplog.text and "dataset 'allbad' is empty" in caplog.text
    (tmp_path / "qa.jsonl").write_text("")
    with pytest.raises(BoomError, match="every dataset is empty"):
        load_training_data(tmp_path, on_bad_line="skip")


def test_duplicate_pairs_are_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = [GOOD[0], GOOD[2], GOOD[0], {"query": GOOD[2]["query"], "pos": [GOOD[2]["pos"][1], "A new passage."]}]
    _write(tmp_path / "dup.jsonl", [json.dumps(r) for r in rows])
    with caplog.at_level(logging.WARNING):
        datasets = scan_training_data(tmp_path)
    # row 3 repeats row 1's one pair; row 4 repeats one of row 2's two pairs
    assert datasets["dup"].duplicate_pairs == 2
    assert len(datasets["dup"].examples) == 4
    assert "2 duplicate (query, pos) pair(s) in dataset 'dup'" in caplog.text


def test_hugging_face_dataset_dirs(tmp_path: Path) -> None:
    from datasets import Dataset, DatasetDict

    triplets = Dataset.from_dict(
        {
            "anchor": ["A man is eating food.", "A plane is taking off."],
            "positive": ["A man is eating a meal.", "An air plane is taking off."],
            "negative": ["A man is riding a horse.", "A cat is playing the piano."],
        }
    )
    pairs = Dataset.from_dict({"anchor": ["How old is the universe?"], "positive": ["About 13.8 billion years."]})
    DatasetDict({"sts": triplets, "qa": pairs}).save_to_disk(str(tmp_path / "dd"))
    data = load_training_data(tmp_path / "dd")
    assert sorted(data) == ["qa", "sts"]
    assert data["sts"][1] == Example(
        id=1, query="A plane is taking off.", pos=("An air plane is taking off.",), neg=("A cat is playing the piano.",)
    )
    assert data["qa"][0].neg == ()
    triplets.save_to_disk(str(tmp_path / "single"))
    assert list(load_training_data(tmp_path / "single")) == ["single"]
    Dataset.from_dict({"text": ["x"]}).save_to_disk(str(tmp_path / "wrong"))
    with pytest.raises(BoomError, match="needs .*anchor, positive.*; columns found: text$"):
        load_training_data(tmp_path / "wrong")
    Dataset.from_dict({"anchor": ["ok", None], "positive": ["fine", "x"]}).save_to_disk(str(tmp_path / "nulls"))
    with pytest.raises(BoomError, match="row 1: column 'anchor' must hold a non-empty text"):
        load_training_data(tmp_path / "nulls")


def test_missing_and_empty_paths(tmp_path: Path) -> None:
    with pytest.raises(BoomError, match="training data not found"):
        load_training_data(tmp_path / "nope")
    with pytest.raises(BoomError, match=r"no training data files \(\*.jsonl, \*.parquet, \*.csv, \*.tsv\)"):
        load_training_data(tmp_path)


def test_cli_reports_bad_line_in_one_line(tmp_path: Path) -> None:
    file = _write(tmp_path / "data" / "qa.jsonl", [json.dumps(GOOD[0]), "{broken"])
    result = CliRunner().invoke(
        main, ["train", "--data", str(tmp_path / "data"), "--base", "unused", "--out", str(tmp_path / "out")]
    )
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith(f"Error: {file}: line 2: invalid JSON")
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()
