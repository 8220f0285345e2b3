"""Bad input: one-line error naming the file, exit != 0, no traceback, nothing written.

Every merge-path class of bad input runs under BOTH ``boom-merge merge`` (in-process,
click's runner) and plain ``mergekit-yaml`` (its console entry point, all cases in one
fresh interpreter with the .pth hook active; one case also through the real console
script). Each asserts the exit code, exactly one ``Error:`` line naming the file, no
traceback, the inputs' bytes unchanged and no stray temporary directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from boom_merge.cli import main

# ------------------------------------------------------------------ helpers


def _copy_members(tiny_bag, tmp_path: Path, n: int = 2) -> list[Path]:
    _, members = tiny_bag
    return [Path(shutil.copytree(member, tmp_path / f"m{i}")) for i, member in enumerate(members[:n])]


def _recipe(tmp_path: Path, members, method="boom", **extra) -> Path:
    recipe = {"merge_method": method, "models": [{"model": str(m)} for m in members], **extra}
    path = tmp_path / "recipe.yml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _error_lines(output: str) -> list[str]:
    # progress bars may precede it; the error itself is exactly one line
    return [line for line in re.split(r"[\r\n]", output) if line.startswith("Error: ")]


def _fails(args, *needles: str) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    errors = _error_lines(result.output)
    assert len(errors) == 1, result.output
    for needle in needles:
        assert str(needle) in errors[0], errors[0]
    return errors[0]


def _no_output(tmp_path: Path) -> None:
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ every class, both paths

_BAD_TENSOR = "embeddings.LayerNorm.weight"


def _set_value(member: Path, value: float, everywhere: bool = False) -> None:
    state = load_file(str(member / "model.safetensors"))
    state[_BAD_TENSOR][slice(None) if everywhere else 3] = value
    save_file(state, str(member / "model.safetensors"))


def _lie_about_dtype(member: Path) -> None:
    """Declare one float32 tensor int32: same byte length, values around 1e9 if believed."""
    file = member / "model.safetensors"
    data = file.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    header[_BAD_TENSOR]["dtype"] = "I32"
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (length - len(text))  # same header length, so the offsets stay right
    assert len(text) == length
    file.write_bytes(data[:8] + text + data[8 + length:])


def _edit_header(member: Path, change) -> None:
    """Rewrite the safetensors header of ``member`` through ``change`` (the data bytes stay)."""
    file = member / "model.safetensors"
    data = file.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    change(header)
    text = json.dumps(header).encode()
    file.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + length:])


def _string_offsets(header: dict) -> None:
    header[_BAD_TENSOR]["data_offsets"] = [str(o) for o in header[_BAD_TENSOR]["data_offsets"]]


def _edit_json(file: Path, change) -> None:
    data = json.loads(file.read_text())
    change(data)
    file.write_text(json.dumps(data))


def _pickle(member: Path) -> None:
    torch.save(load_file(str(member / "model.safetensors")), member / "pytorch_model.bin")
    (member / "model.safetensors").unlink()


def _drop_dense(member: Path) -> None:
    _edit_json(member / "modules.json", lambda modules: modules.__delitem__(2))
    shutil.rmtree(member / "2_Dense")


_VARIANTS = {  # a copy of member 1 with one defect
    "nan": lambda m: _set_value(m, float("nan")),
    "inf": lambda m: _set_value(m, float("inf")),
    "liar": _lie_about_dtype,
    "truncated": lambda m: (m / "model.safetensors").write_bytes((m / "model.safetensors").read_bytes()[:-100]),
    "malformed": lambda m: (m / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all"),
    "stroffsets": lambda m: _edit_header(m, _string_offsets),
    "trailing": lambda m: (m / "model.safetensors").write_bytes((m / "model.safetensors").read_bytes() + b"\0" * 8),
    "noconfig": lambda m: (m / "config.json").unlink(),
    "notokenizer": lambda m: [(m / name).unlink() for name in ("tokenizer.json", "vocab.txt") if (m / name).exists()],
    "pickled": _pickle,
    "cls": lambda m: _edit_json(m / "1_Pooling/config.json", lambda c: c.update(pooling_mode="cls")),
    "prompt": lambda m: _edit_json(m / "config_sentence_transformers.json",
                                   lambda c: c["prompts"].update(query="search: ")),
    "vocab": lambda m: _edit_json(m / "tokenizer.json", lambda t: t["added_tokens"].append(
        {**t["added_tokens"][-1], "id": len(t["model"]["vocab"]), "content": "[NEWTOKEN]"})),
    "nodense": _drop_dense,
    "zero": lambda m: _set_value(m, 0.0, everywhere=True),
    "zero2": lambda m: _set_value(m, 0.0, everywhere=True),
    "zero3": lambda m: _set_value(m, 0.0, everywhere=True),
}


@dataclass(frozen=True)
class Case:
    recipe: str  # YAML, with {W} for the world's root (needles: {R} for the recipe file)
    out: str = "{W}/out"
    needles: tuple[str, ...] = ()

    def paths(self, world: Path, name: str) -> tuple[Path, Path]:
        recipe = world / "recipes" / f"{name}.yml"
        return recipe, Path(self.out.replace("{W}", str(world)))


def _models(*names: str, extra: str = "") -> str:
    return "merge_method: boom\nmodels:\n" + "".join(f"  - model: {{W}}/{n}\n" for n in names) + extra


CASES = {
    "nan": Case(_models("m0", "nan"), needles=("{W}/nan/model.safetensors", _BAD_TENSOR, "NaN or Inf")),
    "inf": Case(_models("m0", "inf"), needles=("{W}/inf/model.safetensors", _BAD_TENSOR, "NaN or Inf")),
    "lying dtype header": Case(_models("m0", "liar"), needles=("{W}/liar/model.safetensors", _BAD_TENSOR, "I32")),
    "truncated": Case(_models("m0", "truncated"), needles=("{W}/truncated/model.safetensors", "truncated")),
    "malformed header": Case(_models("m0", "malformed"), needles=("{W}/malformed/model.safetensors", "corrupt")),
    "string data_offsets": Case(_models("m0", "stroffsets"),
                                needles=("{W}/stroffsets/model.safetensors", _BAD_TENSOR, "corrupt")),
    "bytes after the last tensor": Case(_models("m0", "trailing"),
                                        needles=("{W}/trailing/model.safetensors", "corrupt")),
    "missing config": Case(_models("m0", "noconfig"), needles=("{W}/noconfig", "config.json")),
    "missing tokenizer": Case(_models("m0", "notokenizer"), needles=("{W}/notokenizer", "tokenizer")),
    "pickled weights": Case(_models("m0", "pickled"), needles=("{W}/pickled", "pickled", "--allow-pickle")),
    "pooling differs": Case(_models("m0", "cls"), needles=("{W}/m0", "{W}/cls", "Pooling")),
    "prompts differ": Case(_models("m0", "prompt"), needles=("{W}/m0", "{W}/prompt", "prompts")),
    "vocabulary differs": Case(_models("m0", "vocab"), needles=("{W}/m0", "{W}/vocab", "vocab")),
    "Dense in one only": Case(_models("m0", "nodense"), needles=("{W}/m0", "{W}/nodense", "modules")),
    "unknown method": Case(_models("m0", "m1").replace("boom", "bagging", 1),
                           needles=("{R}", "'bagging'", "boom", "multislerp")),
    "unknown parameter wieght": Case(_models("m0", "m1").replace("/m1\n", "/m1\n    parameters: {wieght: 2}\n"),
                                     needles=("{R}", "'wieght'", "valid: weight")),
    "unknown key paramters": Case(_models("m0", "m1", extra="paramters: {interpolation: linear}\n"),
                                  needles=("{R}", "'paramters'", "parameters")),
    "inf weight": Case(_models("m0", "m1").replace("/m1\n", "/m1\n    parameters: {weight: .inf}\n"),
                       needles=("{R}", "weight", "finite")),
    "empty models": Case("merge_method: boom\nmodels: []\n", needles=("{R}", "models", "empty")),
    "model listed twice": Case(_models("m0", "m1", "m0"), needles=("{R}", "{W}/m0", "2 times")),
    "base_model missing": Case(_models("m0", "m1").replace("boom", "task_arithmetic", 1)
                               .replace("\nmodels:", "\nparameters: {weight: 0.5}\nmodels:"),
                               needles=("{R}", "task_arithmetic needs a base_model")),
    "only the base to merge": Case("merge_method: boom_incremental\nbase_model: {W}/m0\nmodels:\n  - model: {W}/m0\n",
                                   needles=("{R}", "is the base_model {W}/m0")),
    "interpolation unknown": Case(_models("m0", "m1", extra="parameters: {interpolation: cubic}\n"),
                                  needles=("{R}", "invalid interpolation='cubic' in parameters for boom: "
                                           "Input should be 'slerp' or 'linear'")),
    "scale without a base": Case(_models("m0", "m1", extra="parameters: {scale: 0.5}\n"),
                                 needles=("{R}", "scale=0.5 needs a base_model")),
    "out_dtype not a dtype": Case(_models("m0", "m1", extra="out_dtype: float8\n"),
                                  needles=("{R}", "out_dtype: 'float8' is not a dtype", "bfloat16")),
    # mergekit's own method failing midway (a tensor zero in 3 inputs has no direction; 2 fall back to linear)
    "multislerp of a zero tensor": Case("merge_method: multislerp\nparameters: {weight: 1}\nmodels:\n"
                                        + "".join(f"  - model: {{W}}/{n}\n" for n in ("zero", "zero2", "zero3")),
                                        needles=("merge failed", "weighted sum of the input tensors is zero")),
    "OUT inside an input": Case(_models("m0", "m1"), out="{W}/m0/merged", needles=("{W}/m0", "inside")),
    "OUT is an input": Case(_models("m0", "m1"), out="{W}/m1", needles=("{W}/m1", "is the input")),
}

_BATCH = """
import contextlib, io, json, sys, traceback
from mergekit.scripts.run_yaml import main
results = {}
for name, recipe, out in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            main([recipe, out])
            code = 0
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else 1
        except BaseException:
            traceback.print_exc()
            code = None
    results[name] = {"code": code, "stderr": err.getvalue()}
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def world(tiny_bag, tmp_path_factory) -> tuple[Path, dict[str, str], dict]:
    """Members, their defective copies and one recipe per case; mergekit-yaml already run on all."""
    root = tmp_path_factory.mktemp("bad")
    _, members = tiny_bag
    for i, member in enumerate(members[:2]):
        shutil.copytree(member, root / f"m{i}")
    for name, defect in _VARIANTS.items():
        defect(Path(shutil.copytree(members[1], root / name)))
    (root / "recipes").mkdir()
    runs = []
    for name, case in CASES.items():
        recipe, out = case.paths(root, name)
        recipe.write_text(case.recipe.replace("{W}", str(root)))
        runs.append((name, str(recipe), str(out)))
    before = _digests(root)
    env = {k: v for k, v in os.environ.items() if k != "BOOM_MERGE_DISABLE_HOOK"}
    batch = subprocess.run([sys.executable, "-c", _BATCH, json.dumps(runs)], capture_output=True, text=True,
                           env=env, timeout=600)
    assert batch.returncode == 0, batch.stderr[-3000:]
    return root, before, json.loads(batch.stdout.strip().splitlines()[-1])


def _check_clean(root: Path, before: dict[str, str]) -> None:
    assert _digests(root) == before, "an input changed"
    assert not [p for p in root.rglob("*") if ".tmp-" in p.name]
    assert not (root / "out").exists()


@pytest.mark.parametrize("name", list(CASES))
def test_refused_in_one_line_by_both_paths(world, name) -> None:
    root, before, plain = world
    case = CASES[name]
    recipe, out = case.paths(root, name)
    needles = [n.replace("{W}", str(root)).replace("{R}", str(recipe)) for n in case.needles]
    # plain mergekit-yaml (already run, in one fresh interpreter with the hook)
    result = plain[name]
    assert result["code"] == 1, result["stderr"][-2000:]
    assert "Traceback" not in result["stderr"]
    errors = _error_lines(result["stderr"])
    assert len(errors) == 1, result["stderr"][-2000:]
    for needle in needles:
        assert needle in errors[0], errors[0]
    # boom-merge merge
    _fails(["merge", recipe, out], *needles)
    _check_clean(root, before)


def test_the_console_script_refuses_an_input_as_out(world) -> None:
    """The installed `mergekit-yaml` script itself: no SameFileError, the input untouched."""
    root, before, _ = world
    recipe, out = CASES["OUT is an input"].paths(root, "OUT is an input")
    script = Path(sysconfig.get_path("scripts")) / "mergekit-yaml"
    env = {k: v for k, v in os.environ.items() if k != "BOOM_MERGE_DISABLE_HOOK"}
    result = subprocess.run([str(script), str(recipe), str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "SameFileError" not in result.stderr
    assert _error_lines(result.stderr) == [f"Error: output {out} is the input {out}; write elsewhere"]
    _check_clean(root, before)


# ------------------------------------------------------------------ boom-merge only


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


def test_pickled_weights_merge_with_allow_pickle(tmp_path, tiny_bag) -> None:
    m0, m1 = _copy_members(tiny_bag, tmp_path)
    _pickle(m1)
    result = CliRunner().invoke(main, ["merge", str(_recipe(tmp_path, [m0, m1])), str(tmp_path / "out"),
                                       "--allow-pickle"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "model.safetensors").is_file()


def test_invalid_parameter_value(tmp_path, tiny_bag) -> None:
    m0, m1 = _copy_members(tiny_bag, tmp_path)
    recipe = _recipe(tmp_path, [m0, m1], parameters={"interpolation": "cubic"})
    _fails(["merge", recipe, tmp_path / "out"], recipe, "interpolation", "cubic")


@pytest.mark.parametrize(("weights", "needle"), [((-1.0, 2.0), "non-negative"), ((0.0, 0.0), "positive")])
def test_weights_must_be_non_negative_with_a_positive_sum(tmp_path, tiny_bag, weights, needle) -> None:
    m0, m1 = _copy_members(tiny_bag, tmp_path)
    recipe = tmp_path / "recipe.yml"
    recipe.write_text(yaml.safe_dump({"merge_method": "linear", "models": [
        {"model": str(m), "parameters": {"weight": w}} for m, w in zip((m0, m1), weights)]}))
    _fails(["merge", recipe, tmp_path / "out"], recipe, needle)


def test_a_shared_parameter_set_per_model_is_refused(tmp_path, tiny_bag) -> None:
    """mergekit reads `normalize` only from the shared parameters: per model it would be ignored."""
    m0, m1 = _copy_members(tiny_bag, tmp_path)
    recipe = tmp_path / "recipe.yml"
    recipe.write_text(yaml.safe_dump({"merge_method": "linear", "models": [
        {"model": str(m), "parameters": {"weight": 1.0, "normalize": False}} for m in (m0, m1)]}))
    _fails(["merge", recipe, tmp_path / "out"], recipe, "'normalize'", "valid: weight")


def test_a_required_weight_that_is_missing_is_named(tmp_path, tiny_bag) -> None:
    m0, m1 = _copy_members(tiny_bag, tmp_path)
    recipe = _recipe(tmp_path, [m0, m1], method="linear")
    _fails(["merge", recipe, tmp_path / "out"], recipe, "weight", str(m0))


def test_invalid_yaml(tmp_path) -> None:
    recipe = tmp_path / "recipe.yml"
    recipe.write_text("merge_method: [unclosed")
    _fails(["merge", recipe, tmp_path / "out"], recipe, "invalid YAML")


def test_existing_output_needs_force_and_force_replaces_only_our_outputs(tmp_path, tiny_bag) -> None:
    m0, m1 = _copy_members(tiny_bag, tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    recipe = _recipe(tmp_path, [m0, m1])
    _fails(["merge", recipe, out], out, "--force")
    _fails(["merge", recipe, out, "--force"], out, "not written by boom-merge")
    assert (out / "keep.txt").read_text() == "mine"
    shutil.rmtree(out)
    for args in (["merge", str(recipe), str(out)], ["merge", str(recipe), "-o", str(out), "--force"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
    assert (out / "modules.json").is_file()


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
    for size in ("0", "-5M"):
        _fails(["merge", _recipe(tmp_path, [m0, m1]), tmp_path / "out", "--out-shard-size", size], "shard size", size)
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
    assert (tmp_path / "out" / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~mask
