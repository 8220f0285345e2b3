"""Training data that cannot be read, through the CLI: one `Error:` line naming the file, no
traceback, nothing trained or written (the loader's own messages: tests/test_data_formats.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from click.testing import CliRunner

from boom_merge.cli import main
from tests.test_path_safety import strays

GOOD = json.dumps({"query": "cat", "pos": ["a small animal"]})


def _train_fails(tmp_path: Path, data: Path, *needles: str) -> None:
    result = CliRunner().invoke(main, ["train", "--data", str(data), "--base", "unused", "-o", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.output.count("Error: ") == 1, result.output
    # progress bars may precede it on its line (tqdm's cursor escapes); the error itself is one line
    errors = [line[line.index("Error: "):] for line in re.split(r"[\r\n]", result.output) if "Error: " in line]
    for needle in needles:
        assert needle in errors[0], errors[0]
    assert not (tmp_path / "out").exists() and not strays(tmp_path)


def test_jsonl_that_is_not_utf8(tmp_path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "qa.jsonl").write_bytes(GOOD.encode() + b'\n{"query": "caf\xe9", "pos": ["x"]}\n')
    _train_fails(tmp_path, data, str(data / "qa.jsonl"), "line 2: not UTF-8 text (byte 0xe9")


def test_a_directory_named_like_a_jsonl_file(tmp_path) -> None:
    data = tmp_path / "data"
    (data / "x.jsonl").mkdir(parents=True)
    (data / "y.jsonl").write_text(GOOD + "\n")
    _train_fails(tmp_path, data, str(data / "x.jsonl"), "is a directory, not a .jsonl file")

