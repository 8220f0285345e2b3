"""Bad input: one-line error naming the file, exit != 0, no traceback, nothing written."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from boom_merge.cli import main


def _copy_members(tiny_bag, tmp_path: Path, n: int = 2) -> list[Path]:
    _, members = tiny_bag
    copies = []
    for i, member in enumerate(members[:n]):
        copies.append(Path(shutil.copytree(member, tmp_path / f"m{i}")))
    return copies


def _recipe(tmp_path: Path, members, method="boom", **extra) -> Path:
    recipe = {"merge_method": method, "models": [{"model": str(m)} for m in members], **extra}
    path = tmp_path / "recipe.yml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _fails(args, *needles: str) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code != 0
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    # progress bars may precede it; the error itself is exactly one line
    errors = [line for line in re.split(r"[\r\n]", result.output) if line.startswith("Error: ")]
    assert len(errors) == 1, result.output
    message = errors[0]
    for needle in needles:
        assert str(needle) in message, message
    return message


def _no_output(tmp_path: Path) -> None:
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_truncated_safetensors(tmp_path, tiny_bag) -> None:
    m0, m1 = _copy_members(tiny_bag, tmp_path)
    weights = m1 / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    _fails(["merge", _recipe(tmp_path, [m0, m1]), tmp_path / "out"], weights, "truncated")
    _no_output(tmp_path)


def test_corrupt_safetensors_header(tmp_path, tiny_bag) -> None:
    m0, m1 = _copy_members(tiny_bag, tmp_path)
    (m1 / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    _fails(["merge", _recipe(tmp_path, [m0, m1]), tmp_path / "out"], m1 / "model.safetensors", "corrupt")
    _no_output(tmp_path)


def test_shape_mismatch_names_tensor_and_both_models(tmp_path, tiny_bag) -> None:
    m0, m1 = _copy_members(tiny_bag, tmp_path)
    state = load_file(str(m1 / "model.safetensors"))
    state["encoder.layer.0.attention.self.query.weight"] = torch.zeros(32, 16)
    save_file(state, str(m1 / "model.safetensors"))
    _fails(["merge", _recipe(tmp_path, [m0, m1]), tmp_path / "out"],
           "encoder.layer.0.attention.self.query.weight", m0, m1, "[32, 32]", "[32, 16]")
    _no_output(tmp_path)


def test_missing_tensor_names_tensor_and_models(tmp_path, tiny_bag) -> None:
    m0, m1 = _copy_members(tiny_bag, tmp_path)
    state = load_file(str(m1 / "model.safetensors"))
    del state["pooler.dense.bias"]
    save_file(state, str(m1 / "model.safetensors"))
    _fails(["merge", _recipe(tmp_path, [m0, m1]), tmp_path / "out"], "pooler.dense.bias", m0, m1)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_name_the_tensor(tmp_path, tiny_bag, bad) -> None:
    m0, m1 = _copy_members(tiny_bag, tmp_path)
    state = load_file(str(m1 / "model.safetensors"))
    state["embeddings.LayerNorm.weight"][3] = bad
    save_file(state, str(m1 / "model.safetensors"))
    _fails(["merge", _recipe(tmp_path, [m0, m1]), tmp_path / "out"], "embeddings.LayerNorm.weight", "NaN or Inf", m1)
    _no_output(tmp_path)


def test_missing_config(tmp_path, tiny_bag) -> None:
    m0, m1 = _copy_members(tiny_bag, tmp_path)
    (m1 / "config.json").unlink()
    _fails(["merge", _recipe(tmp_path, [m0, m1]), tmp_path / "out"], m1, "config.json")


def test_pickled_weights_need_allow_pickle(tmp_path, tiny_bag) -> None:
    m0, m1 = _copy_members(tiny_bag, tmp_path)
    state = load_file(str(m1 / "model.safetensors"))
    torch.save(state, m1 / "pytorch_model.bin")
    (m1 / "model.safetensors").unlink()
    _fails(["merge", _recipe(tmp_path, [m0, m1]), tmp_path / "out"], m1, "--allow-pickle")
    _no_output(tmp_path)


def test_unknown_method_lists_valid_ones(tmp_path, tiny_bag) -> None:
    m0, m1 = _copy_members(tiny_bag, tmp_path)
    recipe = _recipe(tmp_path, [m0, m1], method="bagging")
    _fails(["merge", recipe, tmp_path / "out"], recipe, "'bagging'", "boom", "multislerp", "ties")


def test_unknown_parameter_lists_valid_ones(tmp_path, tiny_bag) -> None:
    m0, m1 = _copy_members(tiny_bag, tmp_path)
    recipe = _recipe(tmp_path, [m0, m1], parameters={"temperature": 0.5})
    _fails(["merge", recipe, tmp_path / "out"], recipe, "'temperature'", "interpolation", "weight")


def test_invalid_parameter_value(tmp_path, tiny_bag) -> None:
    m0, m1 = _copy_members(tiny_bag, tmp_path)
    recipe = _recipe(tmp_path, [m0, m1], parameters={"interpolation": "cubic"})
    _fails(["merge", recipe, tmp_path / "out"], recipe, "interpolation", "cubic")


def test_invalid_yaml(tmp_path) -> None:
    recipe = tmp_path / "recipe.yml"
    recipe.write_text("merge_method: [unclosed")
    _fails(["merge", recipe, tmp_path / "out"], recipe, "invalid YAML")


def test_existing_output_needs_force(tmp_path, tiny_bag) -> None:
    m0, m1 = _copy_members(tiny_bag, tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    recipe = _recipe(tmp_path, [m0, m1])
    _fails(["merge", recipe, out], out, "--force")
    assert (out / "keep.txt").read_text() == "mine"
    result = CliRunner().invoke(main, ["merge", str(recipe), str(out), "--force"])
    assert result.exit_code == 0, result.output
    assert not (out / "keep.txt").exists() and (out / "modules.json").is_file()


def test_real_process_prints_no_traceback(tmp_path, tiny_bag) -> None:
    m0, m1 = _copy_members(tiny_bag, tmp_path)
    (m1 / "config.json").unlink()
    result = subprocess.run([sys.executable, "-m", "boom_merge.cli", "merge", str(_recipe(tmp_path, [m0, m1])),
                             str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [f"Error: {m1}: missing config.json (not a transformers model directory)"]


def test_invalid_shard_size(tmp_path, tiny_bag) -> None:
    m0, m1 = _copy_members(tiny_bag, tmp_path)
    _fails(["merge", _recipe(tmp_path, [m0, m1]), tmp_path / "out", "--out-shard-size", "lots"], "shard size", "lots")
    _no_output(tmp_path)


def test_small_shards_still_load_as_one_model(tmp_path, tiny_bag) -> None:
    from sentence_transformers import SentenceTransformer

    m0, m1 = _copy_members(tiny_bag, tmp_path)
    result = CliRunner().invoke(main, ["merge", str(_recipe(tmp_path, [m0, m1])), str(tmp_path / "out"),
                                       "--out-shard-size", "200K"])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "out").glob("*.safetensors"))) > 1
    embedding = SentenceTransformer(str(tmp_path / "out"), device="cpu").encode(["text"])
    assert embedding.shape == (1, 16)


def test_outputs_get_the_usual_permissions(tmp_path, tiny_bag) -> None:
    m0, m1 = _copy_members(tiny_bag, tmp_path)
    result = CliRunner().invoke(main, ["merge", str(_recipe(tmp_path, [m0, m1])), str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o777 & ~mask
