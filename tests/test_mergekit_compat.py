"""The mergekit 0.1.5 workarounds. When one of these fails, upstream changed: drop the shim."""

from __future__ import annotations

import os
import subprocess
import sys

import click
import pytest
import yaml
from click.testing import CliRunner
from safetensors.torch import load_file

from boom_merge import mergekit_yaml
from boom_merge.errors import BoomError
from boom_merge.merge import mergekit_compat

_BROKEN_SOURCE = """
import inspect, sys
def without_mergekit_sources(original):
    def get(obj, *args, **kwargs):  # as if mergekit were installed without its .py files
        module = inspect.getmodule(obj)
        if module is not None and module.__name__.split(".")[0] == "mergekit":
            raise OSError("could not get source code")
        return original(obj, *args, **kwargs)
    return get
for name in ("getsource", "getsourcelines", "findsource"):
    setattr(inspect, name, without_mergekit_sources(getattr(inspect, name)))
from mergekit.scripts.run_yaml import main
main(sys.argv[1:])
"""


def _run_yaml(recipe, out, *, hook: bool, code: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("BOOM_MERGE_DISABLE_HOOK", None)
    if not hook:
        env["BOOM_MERGE_DISABLE_HOOK"] = "1"
    command = ["-c", code] if code else ["-m", "mergekit.scripts.run_yaml"]
    return subprocess.run([sys.executable, *command, str(recipe), str(out)],
                          capture_output=True, text=True, env=env, timeout=300)


def test_unpatched_mergekit_crashes_on_bert_and_the_fix_needs_no_source(tmp_path, tiny_bag) -> None:
    """The first half fails once mergekit fixes `[w_in.name] + (w_in.aliases or [])`: then drop fix_plan_tensor.

    The second: with ``inspect.getsource`` broken (an install without sources), mergekit
    still imports and merges a BERT model, and the result is the plain average.
    """
    _, members = tiny_bag
    recipe = tmp_path / "linear.yml"
    recipe.write_text(yaml.safe_dump({"merge_method": "linear",
                                      "models": [{"model": str(m), "parameters": {"weight": 1.0}} for m in members[:2]]}))
    upstream = _run_yaml(recipe, tmp_path / "upstream", hook=False)
    assert upstream.returncode != 0
    assert 'can only concatenate list (not "tuple") to list' in upstream.stderr
    fixed = _run_yaml(recipe, tmp_path / "fixed", hook=True, code=_BROKEN_SOURCE)
    assert fixed.returncode == 0, fixed.stderr[-2000:]
    assert "failed" not in fixed.stderr  # no callback warning either
    merged = load_file(str(tmp_path / "fixed" / "model.safetensors"))
    states = [load_file(str(m / "model.safetensors")) for m in members[:2]]
    for key in ("pooler.dense.weight", "encoder.layer.1.output.dense.weight"):
        expected = (states[0][key].double() + states[1][key].double()) / 2
        assert (merged[key].double() - expected).abs().max() < 1e-6, key


def test_aliases_stay_the_same_tuple_and_a_list_can_be_added_to_them() -> None:
    from mergekit.architecture.base import WeightInfo

    aliases = mergekit_compat.ListConcatenableAliases(("bert.pooler.dense.weight",))
    assert ["pooler.dense.weight"] + aliases == ["pooler.dense.weight", "bert.pooler.dense.weight"]
    assert aliases == ("bert.pooler.dense.weight",) and hash(aliases) == hash(("bert.pooler.dense.weight",))
    with pytest.raises(TypeError):
        ["x"] + ("y",)  # the bug the wrapper works around, in plain Python
    weight = WeightInfo(name="pooler.dense.weight", optional=True, aliases=("bert.pooler.dense.weight",))
    fixed = mergekit_compat._concatenable(weight)
    assert fixed == weight and hash(fixed) == hash(weight)
    assert [fixed.name] + (fixed.aliases or []) == ["pooler.dense.weight", "bert.pooler.dense.weight"]
    plain = WeightInfo(name="embeddings.word_embeddings.weight")
    assert mergekit_compat._concatenable(plain) is plain


def test_patches_are_idempotent_and_wrap_once() -> None:
    for _ in range(2):
        mergekit_compat.fix_plan_tensor()
        mergekit_compat.treat_local_dirs_as_local()
        mergekit_yaml.route_run_merge()
        mergekit_yaml.guard_merge_commands()
    import mergekit.card
    import mergekit.merge
    import mergekit.options
    from mergekit.plan import MergePlanner

    for patched in (MergePlanner.plan_tensor, mergekit.merge.run_merge, mergekit.card.is_hf,
                    mergekit.options.add_merge_options):
        assert getattr(patched, "__boom_merge_patched__", False)
        assert not getattr(patched.__wrapped__, "__boom_merge_patched__", False)
    assert mergekit_compat.upstream_run_merge().__wrapped__ is mergekit.merge.run_merge.__wrapped__  # fresh loaders around it


def test_merge_commands_print_refusals_as_one_line(tmp_path) -> None:
    """Every command built with mergekit's add_merge_options; mergekit-yaml also gets a strict recipe check."""
    import mergekit.options

    mergekit_yaml.guard_merge_commands()

    @click.command()
    @click.argument("config_file")
    @click.argument("out_path")
    @mergekit.options.add_merge_options
    def command(merge_options, config_file, out_path):
        raise BoomError("refused", path=out_path)

    assert CliRunner().invoke(command, ["missing.yml", "o"]).output.strip().splitlines() == [
        "Error: missing.yml: cannot read recipe (No such file or directory)"]
    recipe = tmp_path / "r.yml"
    recipe.write_text(yaml.safe_dump({"merge_method": "linear", "models": [{"model": "a", "parameters": {"weight": 1}}]}))
    result = CliRunner().invoke(command, [str(recipe), "o"])
    assert (result.exit_code, result.output.strip()) == (1, "Error: o: refused")


def test_local_directory_is_never_looked_up_on_the_hub(tmp_path, monkeypatch) -> None:
    import huggingface_hub
    import mergekit.card

    mergekit_compat.treat_local_dirs_as_local()
    folder = tmp_path / "m0"
    folder.mkdir()
    monkeypatch.chdir(tmp_path)

    def no_network(*args, **kwargs):
        raise AssertionError("the Hub was queried")

    monkeypatch.setattr(huggingface_hub, "repo_exists", no_network)
    assert mergekit.card.is_hf("m0") is False
