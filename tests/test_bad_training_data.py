"""Training data that cannot be read, through the CLI: one `Error:` line naming the file, no
traceback, nothing trained or written (the loader's own messages: tests/test_data_formats.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from boom_merge.cli import main
from tests.test_path_safety import strays

GOOD = json.dumps({"query": "cat", "pos": ["a small animal"]})


def _train_fails(tmp_path: Path, data: Path, *needles: str) -> None:
    _cli_fails(tmp_path, ["train", "--data", str(data), "--base", "unused", "-o", str(tmp_path / "out")], *needles)


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


# --- the base model: refused before anything is trained; the output checked and locked first --------


def _cli_fails(tmp_path: Path, args: list[str], *needles: str) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.output.count("Error: ") == 1, result.output
    errors = [line[line.index("Error: "):] for line in re.split(r"[\r\n]", result.output) if "Error: " in line]
    for needle in needles:
        assert needle in errors[0], errors[0]
    assert not (tmp_path / "out").exists() and not strays(tmp_path)


def _data(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    (data / "qa.jsonl").write_text("\n".join([GOOD, json.dumps({"query": "dog", "pos": ["a pet"]})]) + "\n")
    return data


def _bad_base(tmp_path: Path, tiny_bert_base: Path, defect: str) -> tuple[Path, str]:
    """A copy of the tiny base without tokenizer files, or with one NaN / Inf weight; the needle naming it."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    base = tmp_path / f"base-{defect}"
    shutil.copytree(tiny_bert_base, base)
    if defect == "notokenizer":
        for name in ("tokenizer.json", "vocab.txt"):
            (base / name).unlink(missing_ok=True)
        return base, "no tokenizer files"
    tensors = load_file(str(base / "model.safetensors"))
    name = next(key for key, value in sorted(tensors.items()) if value.is_floating_point())
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] = torch.tensor(float(defect))
    save_file(tensors, str(base / "model.safetensors"), metadata={"format": "pt"})
    return base, name


@pytest.mark.parametrize("defect", ["notokenizer", "nan", "inf"])
def test_train_refuses_a_bad_base(tmp_path: Path, tiny_bert_base: Path, defect: str) -> None:
    base, needle = _bad_base(tmp_path, tiny_bert_base, defect)
    data = _data(tmp_path)
    out = str(tmp_path / "out")
    _cli_fails(tmp_path, ["train", "--data", str(data), "--base", str(base), "-o", out, "--max-steps", "1"],
               str(base), needle)  # fmt: skip
    _cli_fails(tmp_path, ["train-update", "--base", str(base), "--new-data", str(data), "--history-data", str(data),
                          "-o", out, "--max-steps", "1"], str(base), needle)  # fmt: skip


def test_output_is_checked_before_the_base_is_hashed(tmp_path: Path, tiny_bert_base: Path, monkeypatch) -> None:
    import boom_merge.training.manifest as manifest

    def no_hash(path):
        raise AssertionError("the base was hashed before the output was checked")

    monkeypatch.setattr(manifest, "model_sha256", no_hash)
    data = _data(tmp_path)
    for command in (["train", "--data", str(data)], ["train-update", "--new-data", str(data), "--history-data",
                                                     str(data)]):  # fmt: skip
        result = CliRunner().invoke(main, [*command, "--base", str(tiny_bert_base), "-o", str(data / "inside")])
        assert result.exit_code == 1 and "lies inside the input" in result.output, result.output
        assert "Traceback" not in result.output and not (data / "inside").exists()


_HOLD = "import sys, time; from boom_merge.outputs import output_lock\nwith output_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(120)\n"  # noqa: E501


def test_a_concurrent_train_to_the_same_output_fails_fast(tmp_path: Path, tiny_bert_base: Path) -> None:
    import os
    import subprocess
    import sys

    from boom_merge.data.sampling import plan_members

    data = _data(tmp_path)
    out = tmp_path / "bag"
    cases = [
        (out / plan_members("50", seed=42)[0].name,
         ["train", "--data", str(data), "--ratios", "50", "--base", str(tiny_bert_base), "-o", str(out)]),
        (tmp_path / "upd", ["train-update", "--base", str(tiny_bert_base), "--new-data", str(data),
                            "--history-data", str(data), "-o", str(tmp_path / "upd")]),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    for locked, args in cases:
        holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(locked)], stdout=subprocess.PIPE, text=True, env=env)
        try:
            assert holder.stdout.readline().strip() == "held"
            result = CliRunner().invoke(main, [*args, "--max-steps", "1"])
        finally:
            holder.kill()
            holder.wait()
        assert result.exit_code == 1, result.output
        assert "Traceback" not in result.output and result.output.count("Error: ") == 1, result.output
        assert f"another boom-merge is writing {locked}" in result.output, result.output
        assert not (locked / "model.safetensors").exists()
        assert not (locked.parent / f".{locked.name}.work").exists()  # failed before training, not at the end
