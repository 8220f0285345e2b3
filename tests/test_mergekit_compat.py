"""The mergekit 0.1.5 workarounds. When one of these fails, upstream changed: drop the shim."""

from __future__ import annotations

import os
import subprocess
import sys

import yaml

from boom_merge import mergekit_compat


def _run_yaml(recipe, out, *, hook: bool) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("BOOM_MERGE_DISABLE_HOOK", None)
    if not hook:
        env["BOOM_MERGE_DISABLE_HOOK"] = "1"
    return subprocess.run([sys.executable, "-m", "mergekit.scripts.run_yaml", str(recipe), str(out)],
                          capture_output=True, text=True, env=env, timeout=300)


def test_upstream_plan_tensor_still_has_the_alias_bug() -> None:
    """Fails once mergekit fixes `[w_in.name] + (w_in.aliases or [])`: then delete patch_plan_tensor."""
    assert mergekit_compat.plan_tensor_has_alias_bug()


def test_unpatched_mergekit_crashes_on_bert_and_the_shim_fixes_it(tmp_path, tiny_bag) -> None:
    _, members = tiny_bag
    recipe = tmp_path / "linear.yml"
    recipe.write_text(yaml.safe_dump({"merge_method": "linear", "dtype": "float32",
                                      "models": [{"model": str(m), "parameters": {"weight": 1.0}} for m in members[:2]]}))
    upstream = _run_yaml(recipe, tmp_path / "upstream", hook=False)
    assert upstream.returncode != 0
    assert 'can only concatenate list (not "tuple") to list' in upstream.stderr
    fixed = _run_yaml(recipe, tmp_path / "fixed", hook=True)
    assert fixed.returncode == 0, fixed.stderr[-2000:]
    assert (tmp_path / "fixed" / "model.safetensors").is_file()


def test_patches_are_idempotent_and_marked() -> None:
    mergekit_compat.ensure_applied()
    mergekit_compat.ensure_applied()
    from mergekit.card import is_hf
    from mergekit.merge import run_merge
    from mergekit.plan import MergePlanner

    for patched in (MergePlanner.plan_tensor, run_merge, is_hf):
        assert getattr(patched, "__boom_merge_patched__", False)
    assert mergekit_compat.FIXED_ALIAS_EXPR not in mergekit_compat.BUGGY_ALIAS_EXPR


def test_local_directory_is_never_looked_up_on_the_hub(tmp_path, monkeypatch) -> None:
    import huggingface_hub
    import mergekit.card

    mergekit_compat.ensure_applied()
    folder = tmp_path / "m0"
    folder.mkdir()
    monkeypatch.chdir(tmp_path)

    def no_network(*args, **kwargs):
        raise AssertionError("the Hub was queried")

    monkeypatch.setattr(huggingface_hub, "repo_exists", no_network)
    assert mergekit.card.is_hf("m0") is False
