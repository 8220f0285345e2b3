"""Bad output paths at the commands that write: one `Error:` line, inputs untouched, nothing left behind."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from boom_merge.cli import main
from boom_merge.errors import BoomError
from boom_merge.lineage import LINEAGE_FILE
from tests.test_path_safety import strays, tree_sha256


def _fails(args, *needles) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    assert result.output.count("Error: ") == 1, result.output
    # progress bars may precede it on its line (tqdm's cursor escapes); the error itself is one line
    errors = [line[line.index("Error: "):] for line in re.split(r"[\r\n]", result.output) if "Error: " in line]
    for needle in needles:
        assert str(needle) in errors[0], errors[0]
    return errors[0]


def _models(tiny_bag, root: Path, *names: str) -> list[Path]:
    _, members = tiny_bag
    return [Path(shutil.copytree(member, root / name)) for member, name in zip(members, names)]


def _recipe(path: Path, members) -> Path:
    path.write_text(yaml.safe_dump({"merge_method": "boom", "models": [{"model": str(m)} for m in members]}))
    return path


def _unchanged(tmp_path: Path, before: dict[str, str]) -> None:
    assert tree_sha256(tmp_path) == before
    assert not strays(tmp_path)


def test_merge_force_over_the_dir_that_holds_the_members(tmp_path, tiny_bag) -> None:
    members = _models(tiny_bag, tmp_path / "bag", "m0", "m1")
    recipe = _recipe(tmp_path / "boom.yml", members)
    before = tree_sha256(tmp_path)
    _fails(["merge", recipe, tmp_path / "bag", "--force"], tmp_path / "bag", "contains the input")
    _unchanged(tmp_path, before)


def test_merge_into_an_input(tmp_path, tiny_bag) -> None:
    members = _models(tiny_bag, tmp_path, "m0", "m1")
    recipe = _recipe(tmp_path / "boom.yml", members)
    before = tree_sha256(tmp_path)
    _fails(["merge", recipe, members[0] / "merged"], members[0] / "merged", "inside the input")
    _fails(["merge", recipe, members[1], "--force"], members[1])
    _unchanged(tmp_path, before)


def test_merge_where_the_parent_is_a_file(tmp_path, tiny_bag) -> None:
    members = _models(tiny_bag, tmp_path, "m0", "m1")
    recipe = _recipe(tmp_path / "boom.yml", members)
    (tmp_path / "file").write_text("x")
    before = tree_sha256(tmp_path)
    _fails(["merge", recipe, tmp_path / "file" / "out"], tmp_path / "file", "not a directory")
    _unchanged(tmp_path, before)


def test_incremental_force_over_the_dir_that_holds_old(tmp_path, tiny_bag) -> None:
    old, update = _models(tiny_bag, tmp_path / "models", "old", "upd")
    before = tree_sha256(tmp_path)
    _fails(["incremental", old, update, "-o", tmp_path / "models", "--force"], tmp_path / "models", "contains the input")
    _fails(["incremental", old, update, "-o", old, "--force"], old, "is the input")
    _fails(["incremental", old, update, "-o", old / "new"], old / "new", "inside the input")
    _unchanged(tmp_path, before)


def test_incremental_through_symlinks(tmp_path, tiny_bag) -> None:
    old, update = _models(tiny_bag, tmp_path, "old", "upd")
    (tmp_path / "link").symlink_to(old)
    (tmp_path / "sub").symlink_to(old / "2_Dense")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    before = tree_sha256(tmp_path)
    _fails(["incremental", old, update, "-o", tmp_path / "link"], tmp_path / "link", "is the input")
    _fails(["incremental", old, update, "-o", tmp_path / "sub", "--force"], tmp_path / "sub", "inside the input")
    _fails(["incremental", old, update, "-o", tmp_path / "dangling"], tmp_path / "dangling", "dangling symlink")
    _unchanged(tmp_path, before)


def test_incremental_old_old(tmp_path, tiny_bag) -> None:
    (old,) = _models(tiny_bag, tmp_path, "old")
    (tmp_path / "same").symlink_to(old)
    before = tree_sha256(tmp_path)
    _fails(["incremental", old, old, "-o", tmp_path / "new"], "UPDATE is OLD", old)
    _fails(["incremental", old, tmp_path / "same", "-o", tmp_path / "new"], "UPDATE is OLD")
    _unchanged(tmp_path, before)
    assert not (tmp_path / "new").exists()


def test_incremental_with_a_corrupt_lineage(tmp_path, tiny_bag) -> None:
    old, update = _models(tiny_bag, tmp_path, "old", "upd")
    (old / LINEAGE_FILE).write_text('{"kind": "merge", "inputs": [')
    before = tree_sha256(tmp_path)
    _fails(["incremental", old, update, "-o", tmp_path / "new"], old / LINEAGE_FILE)
    _unchanged(tmp_path, before)
    assert not (tmp_path / "new").exists()


def test_incremental_with_a_missing_corpus_writes_no_new(tmp_path, tiny_bag) -> None:
    old, update = _models(tiny_bag, tmp_path, "old", "upd")
    before = tree_sha256(tmp_path)
    _fails(["incremental", old, update, "-o", tmp_path / "new", "--data", "/nonexistent"], "/nonexistent")
    _unchanged(tmp_path, before)
    assert not (tmp_path / "new").exists()


def test_drift_json_in_a_missing_dir(tmp_path, tiny_bag) -> None:
    old, new = _models(tiny_bag, tmp_path, "old", "new")
    before = tree_sha256(tmp_path)
    _fails(["drift", old, new, "--json", "/nonexistent/dir/x.json"], "/nonexistent/dir/x.json", "does not exist")
    _fails(["drift", old, new, "--json", old / "drift.json"], old / "drift.json", "inside the input")
    _unchanged(tmp_path, before)


def test_drift_json_over_an_existing_file_needs_force(tmp_path, tiny_bag) -> None:
    old, new = _models(tiny_bag, tmp_path, "old", "new")
    report = tmp_path / "drift.json"
    report.write_text("a report the user keeps\n")
    before = tree_sha256(tmp_path)
    _fails(["drift", old, new, "--json", report], report, "already exists; pass --force")
    _unchanged(tmp_path, before)


def test_recipe_inside_a_member(tmp_path, tiny_bag) -> None:
    members = _models(tiny_bag, tmp_path, "m0", "m1")
    before = tree_sha256(tmp_path)
    _fails(["recipe", *members, "-o", members[0] / "boom.yml"], members[0] / "boom.yml", "inside the input")
    _unchanged(tmp_path, before)
    result = CliRunner().invoke(main, ["recipe", *map(str, members), "-o", str(tmp_path / "new" / "boom.yml")])
    assert result.exit_code == 0, result.output
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "new" / "boom.yml").stat().st_mode & 0o777 == 0o666 & ~mask and not strays(tmp_path)


def test_merge_while_another_run_writes_the_same_out(tmp_path, tiny_bag) -> None:
    import fcntl

    members = _models(tiny_bag, tmp_path, "m0", "m1")
    recipe = _recipe(tmp_path / "boom.yml", members)
    fd = os.open(tmp_path / ".out.lock", os.O_RDWR | os.O_CREAT)  # the first run's lock
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        before = tree_sha256(tmp_path)
        _fails(["merge", recipe, tmp_path / "out"], f"another boom-merge is writing {tmp_path / 'out'}")
        assert tree_sha256(tmp_path) == before and not (tmp_path / "out").exists()
    finally:
        os.close(fd)


def test_plain_mergekit_yaml_while_another_run_writes_the_same_out(tmp_path, tiny_bag) -> None:
    """The hook's path (merge_in_place) takes OUT's lock too: mergekit never starts writing."""
    import fcntl

    from boom_merge.merge.pipeline import load_recipe, merge_in_place

    members = _models(tiny_bag, tmp_path, "m0", "m1")
    config, text = load_recipe(_recipe(tmp_path / "boom.yml", members))
    called = []
    fd = os.open(tmp_path / ".out.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, b"4242\n")
    try:
        before = tree_sha256(tmp_path)
        with pytest.raises(BoomError, match=f"^another boom-merge is writing {tmp_path / 'out'} \\(pid 4242\\)$"):
            merge_in_place(config, tmp_path / "out", options=None, config_source=text,
                           upstream=lambda *args: called.append(args))
        assert not called and tree_sha256(tmp_path) == before and not (tmp_path / "out").exists()
    finally:
        os.close(fd)


def test_a_member_whose_files_link_into_out_is_never_merged_over(tmp_path, tiny_bag) -> None:
    """A member made of links (``cp -rs``) into OUT, an earlier output: neither ``merge --force`` nor the hook's
    in-place write (plain mergekit-yaml into an existing OUT) may write the member's bytes."""
    from boom_merge.merge.pipeline import load_recipe, merge_in_place

    m0, store = _models(tiny_bag, tmp_path, "m0", "store")
    (store / ".boom-merge-output").write_text("{}")  # an earlier boom-merge output: --force would replace it
    farm = tmp_path / "farm"
    shutil.copytree(store, farm, symlinks=True, copy_function=lambda src, dst: os.symlink(os.path.abspath(src), dst))
    recipe = _recipe(tmp_path / "boom.yml", [m0, farm])
    before = tree_sha256(tmp_path)
    _fails(["merge", recipe, store, "--force"], f"output {store} holds files of the input {farm}", "is a link to")
    config, text = load_recipe(recipe)
    called = []
    with pytest.raises(BoomError, match=re.escape(f"output {store} holds files of the input {farm}")):
        merge_in_place(config, store, options=None, config_source=text, upstream=lambda *args: called.append(args))
    assert not called
    _unchanged(tmp_path, before)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_plain_mergekit_yaml_into_an_earlier_output_leaves_none_of_its_model(tmp_path, tiny_bag) -> None:
    """mergekit-yaml writes into an existing OUT; when it writes the weights in other files (shards where
    there was one file), the earlier model's weights and recipe copy would win when loading: they go."""
    import subprocess
    import sys

    import numpy as np
    from sentence_transformers import SentenceTransformer

    from boom_merge.merge.pipeline import merge_recipe

    m0, m1 = _models(tiny_bag, tmp_path, "m0", "m1")
    first = _recipe(tmp_path / "first.yml", [m0, m1])
    second = tmp_path / "second.yml"
    second.write_text(yaml.safe_dump({"merge_method": "boom", "parameters": {"interpolation": "linear"},
                                      "models": [{"model": str(m0), "parameters": {"weight": 1}},
                                                 {"model": str(m1), "parameters": {"weight": 3}}]}))
    out = merge_recipe(first, tmp_path / "out")
    assert (out / "model.safetensors").is_file() and (out / "boom_recipe.yml").is_file()
    members = (tree_sha256(m0), tree_sha256(m1))
    env = {k: v for k, v in os.environ.items() if k != "BOOM_MERGE_DISABLE_HOOK"}
    plain = subprocess.run([sys.executable, "-m", "mergekit.scripts.run_yaml", str(second), str(out),
                            "--out-shard-size", "1K"], capture_output=True, text=True, env=env, timeout=300)
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert "removed boom_recipe.yml, model.safetensors, left by the model written there before" in plain.stderr
    assert not (out / "model.safetensors").exists() and not (out / "boom_recipe.yml").exists()
    assert (out / "model.safetensors.index.json").is_file()
    # the umask's usual modes, as boom-merge's own outputs (safetensors writes 600)
    shards = list(out.glob("model-*.safetensors"))
    assert shards and {oct(p.stat().st_mode & 0o777) for p in shards} == {oct(0o666 & ~_umask())}
    fresh = merge_recipe(second, tmp_path / "fresh")
    texts = ["a cat", "grep searches files"]
    got, want = (SentenceTransformer(str(p), device="cpu").encode(texts) for p in (out, fresh))
    assert np.abs(got - want).max() <= 1e-6
    assert (tree_sha256(m0), tree_sha256(m1)) == members


def test_eval_out_never_in_or_around_a_model_or_the_corpus(tmp_path, tiny_bag) -> None:
    from tests.test_evaluation import write_corpus

    corpus = write_corpus(tmp_path / "data" / "corpus")
    (model,) = _models(tiny_bag, tmp_path / "models", "m0")
    before = tree_sha256(tmp_path)
    for out, problem in [(model / "eval", "inside the input"), (tmp_path / "models", "contains the input"),
                         (corpus / "eval", "inside the input"), (tmp_path / "data", "contains the input")]:
        _fails(["eval", model, "--corpus", corpus, "--out", out, "--force"], out, problem)
    _unchanged(tmp_path, before)


def test_train_out_never_in_the_data_or_the_base(tmp_path, tiny_bert_base) -> None:
    import json

    base = Path(shutil.copytree(tiny_bert_base, tmp_path / "base"))
    data = tmp_path / "data"
    data.mkdir()
    (data / "qa.jsonl").write_text("".join(json.dumps({"query": f"q{i}", "pos": [f"d{i}"]}) + "\n" for i in range(8)))
    before = tree_sha256(tmp_path)
    for out in (data / "members", base / "members", data):
        _fails(["train", "--data", data, "--base", base, "--ratios", "100", "--max-steps", "1", "-o", out, "--force"],
               "input")
    _unchanged(tmp_path, before)
