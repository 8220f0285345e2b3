"""Training data that cannot be read: one `Error:` line naming the file, nothing trained or written."""

from __future__ import annotations

import json
import re
from pathlib import Path

from click.testing import CliRunner

from boom_merge.cli import main
from boom_merge.data.loading import scan_training_data
from tests.test_path_safety import strays

GOOD = json.dumps({"query": "cat", "pos": ["a small animal"]})


def _train_fails(tmp_path: Path, data: Path, *needles: str) -> None:
    result = CliRunner().invoke(main, ["train", "--data", str(data), "--base", "unused", "-o", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = [line for line in re.split(r"[\r\n]", result.output) if line.startswith("Error: ")]
    assert len(errors) == 1, result.output
    for needle in needles:
        assert needle in errors[0], errors[0]
    assert not (tmp_path / "out").exists() and not strays(tmp_path)


def test_jsonl_that_is_not_utf8(tmp_path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "qa.jsonl").write_bytes(GOOD.encode() + b'\n{"query": "caf\xe9", "pos": ["x"]}\n')
    _train_fails(tmp_path, data, str(data / "qa.jsonl"), "line 2: not UTF-8 text (invalid byte 0xe9 at position 15)")
    skipped = scan_training_data(data, on_bad_line="skip")["qa"]
    assert [e.query for e in skipped.examples] == ["cat"] and [n for n, _ in skipped.bad_lines] == [2]


def test_a_directory_named_like_a_jsonl_file(tmp_path) -> None:
    data = tmp_path / "data"
    (data / "x.jsonl").mkdir(parents=True)
    (data / "y.jsonl").write_text(GOOD + "\n")
    _train_fails(tmp_path, data, str(data / "x.jsonl"), "not a jsonl file")


def test_a_byte_order_mark_is_not_an_error(tmp_path) -> None:
    file = tmp_path / "qa.jsonl"
    file.write_bytes(b"\xef\xbb\xbf" + GOOD.encode() + b"\r\n")
    assert [e.query for e in scan_training_data(file)["qa"].examples] == ["cat"]
