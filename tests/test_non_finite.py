"""Issue 22 item 7: the BOOM kernels refuse NaN/Inf input at the point of use, whatever door
calls them: mergekit's in-memory API (``merge_tensors``, ``merge_state_dicts``),
``SentenceTransformer.merge``, and (with the up-front pass over the weights gone for BOOM
merges) ``boom-merge merge`` / plain ``mergekit-yaml``, which still answer one ``Error:`` line
naming the input's weight file and the tensor, with nothing written.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from mergekit.merge_methods import merge_state_dicts, merge_tensors
from safetensors.torch import load_file, save_file
from sentence_transformers import SentenceTransformer

from boom_merge.cli import main
from boom_merge.merge.methods import NonFiniteInputError, register_methods

register_methods()
TENSOR = "encoder.layer.1.output.dense.weight"  # late in the file: shards may be written before it


def _tensors(bad: int, value: float, m: int = 3) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    tensors = [torch.randn((64, 32), generator=generator) for _ in range(m)]
    tensors[bad][5, 7] = value
    return tensors


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("parameters", [{"interpolation": "slerp"}, {"interpolation": "linear"}])
def test_merge_tensors_refuses_naming_tensor_and_input(value, parameters) -> None:
    with pytest.raises(NonFiniteInputError, match=r"tensor 'w\.q' of input 2 contains NaN or Inf") as caught:
        merge_tensors(_tensors(2, value), "boom", parameters=parameters, name="w.q")
    assert caught.value.tensor == "w.q" and caught.value.input_id == 2


@pytest.mark.parametrize("bad", [0, 1, 3])  # 3 = the base
def test_merge_tensors_with_a_base_names_the_bad_input(bad) -> None:
    tensors = _tensors(bad, float("nan"), m=4)
    with pytest.raises(NonFiniteInputError) as caught:
        merge_tensors(tensors, "boom", base_index=3, parameters={"scale": 0.5})
    assert caught.value.input_id == bad


@pytest.mark.parametrize("alpha", [0.3, 1.0])
def test_incremental_refuses_a_non_finite_update(alpha) -> None:
    with pytest.raises(NonFiniteInputError) as caught:
        merge_tensors(_tensors(1, float("nan"), m=2), "boom_incremental", base_index=0,
                      parameters={"update_weight": alpha})
    assert caught.value.input_id == 1


def test_one_member_returned_as_it_is_is_checked_too() -> None:
    with pytest.raises(NonFiniteInputError):
        merge_tensors(_tensors(0, float("inf"), m=1), "boom")


def test_merge_state_dicts_refuses_and_finite_inputs_still_merge() -> None:
    states = {i: {"a": t} for i, t in enumerate(_tensors(1, float("nan")))}
    with pytest.raises(NonFiniteInputError, match="'a' of input 1"):
        merge_state_dicts(states, "boom")
    finite = {i: {"a": t} for i, t in enumerate(_tensors(1, 0.0))}
    assert torch.isfinite(merge_state_dicts(finite, "boom")["a"]).all()


def _with_nan(member: Path, copy: Path) -> Path:
    shutil.copytree(member, copy)
    state = load_file(str(copy / "model.safetensors"))
    state[TENSOR][2, 3] = float("nan")
    save_file(state, str(copy / "model.safetensors"), metadata={"format": "pt"})
    return copy


@pytest.mark.parametrize("method", ["boom", "boom_incremental"])
def test_sentence_transformers_merge_refuses(tmp_path, tiny_bag, method) -> None:
    """``SentenceTransformer.merge``: a ValueError naming the tensor, not a model of NaN embeddings."""
    base, members = tiny_bag
    bad = _with_nan(members[1], tmp_path / "bad")
    kwargs = {"base_model": str(base), "parameters": {"update_weight": 0.5}} if method == "boom_incremental" else {}
    with pytest.raises(ValueError, match=rf"tensor '[\w.]*{TENSOR}' of input 1 contains NaN or Inf"):
        SentenceTransformer.merge([str(members[0]), str(bad)], method=method, device="cpu", **kwargs)


def _recipe(tmp_path: Path, models: list[Path], method: str = "boom", base: Path | None = None) -> Path:
    recipe: dict = {"merge_method": method, "models": [{"model": str(m)} for m in models]}
    if base is not None:
        recipe["base_model"] = str(base)
        if method == "boom_incremental":
            recipe["parameters"] = {"update_weight": 0.5}
    path = tmp_path / "recipe.yml"
    path.write_text(yaml.safe_dump(recipe))
    return path


_CASES = {  # name -> (method, the bad input's role)
    "member": ("boom", "member"),
    "base": ("boom", "base"),
    "update": ("boom_incremental", "member"),
    "existing": ("boom_incremental", "base"),
}


@pytest.mark.parametrize("case", list(_CASES))
def test_both_commands_refuse_in_one_line_with_nothing_written(tmp_path, tiny_bag, case) -> None:
    """The kernel's refusal, mapped back to the input: its weight file and the tensor, one line, no
    output; plain mergekit-yaml with small output shards (written before the bad tensor is reached)
    leaves nothing behind either, in a new OUT or in an existing one."""
    method, role = _CASES[case]
    base, members = tiny_bag
    bad = _with_nan(base if role == "base" else members[1], tmp_path / "bad")
    models = [members[0]] + ([bad] if role == "member" else [members[2]] if method == "boom" else [])
    recipe = _recipe(tmp_path, models, method, base=bad if role == "base" else base)
    needle = f"Error: {bad / 'model.safetensors'}: tensor '{TENSOR}' contains NaN or Inf values"
    result = CliRunner().invoke(main, ["merge", str(recipe), str(tmp_path / "out"), "--out-shard-size", "20K"])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert [line for line in result.output.splitlines() if line.startswith("Error")] == [needle]
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    for out in (tmp_path / "new", existing):
        plain = subprocess.run([sys.executable, "-m", "mergekit.scripts.run_yaml", str(recipe), str(out),
                                "--out-shard-size", "20K"], capture_output=True, text=True, timeout=300)
        assert plain.returncode == 1 and "Traceback" not in plain.stderr, plain.stderr[-2000:]
        assert [line for line in plain.stderr.splitlines() if line.startswith("Error")] == [needle]
    assert not (tmp_path / "new").exists()
    assert [p.name for p in existing.iterdir()] == ["notes.txt"]


def test_boom_merges_read_the_transformer_weights_once(tmp_path, tiny_bag, monkeypatch) -> None:
    """No finite pass over the transformer's weights before a BOOM merge (its kernel checks them);
    the modules' small weights (Dense) are still checked up front."""
    import boom_merge.model_refs as models

    checked: list[Path] = []
    original = models.check_finite
    monkeypatch.setattr(models, "check_finite", lambda files, **kw: (checked.append(files.path), original(files, **kw)))
    _, members = tiny_bag
    result = CliRunner().invoke(main, ["merge", str(_recipe(tmp_path, members[:2])), str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert {path.name for path in checked} >= {"2_Dense"}, checked
    assert not set(checked) & set(members), checked
