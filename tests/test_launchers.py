"""Scaling out on this CPU machine: Ray tasks per member, torchrun (gloo) inside a member."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from boom_merge.data.sampling import plan_members
from boom_merge.errors import BoomError
from boom_merge.training import TrainConfig, train_member

TINY = dict(batch_size=8, group_size=2, learning_rate=2e-3, warmup_ratio=0.0, logging_steps=1, max_steps=3)
RATIOS = "50,100"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two datasets of (function name -> first docstring paragraph) pairs from the stdlib."""
    import inspect
    import json as json_module
    import math
    import random
    import re
    import textwrap

    rows = [
        {"query": f"{module.__name__}.{name}", "pos": [obj.__doc__.strip().split("\n\n")[0]]}
        for module in (os.path, json_module, textwrap, shutil, os, inspect, re, random, math)
        for name, obj in sorted(vars(module).items())
        if callable(obj) and not name.startswith("_") and obj.__doc__ and len(obj.__doc__.strip()) > 20
    ]
    train = tmp_path_factory.mktemp("corpus") / "train"
    train.mkdir()
    half = len(rows) // 2
    for name, part in (("paths", rows[:half]), ("misc", rows[half:])):
        (train / f"{name}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in part))
    return train


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))


def test_ray_members_equal_in_process_training(corpus: Path, tiny_bert_base: Path, tmp_path: Path) -> None:
    import ray  # noqa: F401  (the ray extra; scripts/setup.sh installs it)
    from boom_merge.training.launchers import ray_train_members

    config = TrainConfig(**TINY)
    paths = ray_train_members(corpus, str(tiny_bert_base), RATIOS, tmp_path / "ray", config, seed=7)
    specs = plan_members(RATIOS, seed=7)
    assert [p.name for p in paths] == [spec.name for spec in specs]
    base = _weights(tiny_bert_base)
    for path, spec in zip(paths, specs):
        manifest = json.loads((path / "boom_member.json").read_text())
        recorded = (manifest["member_index"], manifest["sample_ratio"], manifest["seed"])
        assert recorded == (spec.index, spec.ratio, spec.seed)
        reference = train_member(corpus, str(tiny_bert_base), spec, tmp_path / "local", config)
        expected, got = _weights(reference), _weights(path)
        assert got.keys() == expected.keys()
        moved = max((got[k] - base[k]).abs().max().item() for k in got)
        assert moved > 1e-4  # it trained
        for key in got:
            torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-5, msg=key)


def test_ray_failures_name_each_member(corpus: Path, tiny_bert_base: Path, tmp_path: Path) -> None:
    import ray  # noqa: F401  (the ray extra; scripts/setup.sh installs it)
    from boom_merge.training.launchers import ray_train_members

    bad = tmp_path / "bad"
    shutil.copytree(corpus, bad)
    with (bad / "paths.jsonl").open("a") as handle:
        handle.write("{not json\n")
    with pytest.raises(BoomError, match=r"2 of 2 members failed \(member 0: BoomError: .*paths\.jsonl.*; member 1: "):
        ray_train_members(bad, str(tiny_bert_base), RATIOS, tmp_path / "out", TrainConfig(**TINY))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").glob("member-*"))


def test_torchrun_two_cpu_processes_train_one_member(corpus: Path, tiny_bert_base: Path, tmp_path: Path) -> None:
    """`torchrun --nproc_per_node 2` (gloo on CPU) data-parallel training of member 0."""
    torchrun = shutil.which("torchrun")
    boom = shutil.which("boom-merge")
    assert torchrun is not None and boom is not None, "torchrun (ships with torch) or boom-merge not on PATH"
    out = tmp_path / "members"
    command = [
        torchrun, "--nproc_per_node", "2", "--no-python", boom, "train", "--data", str(corpus),
        "--base", str(tiny_bert_base), "--ratios", RATIOS, "--member", "0", "--out", str(out),
        "--max-steps", "3", "--batch-size", "8", "--logging-steps", "1",
    ]  # fmt: skip
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    member = out / plan_members(RATIOS, seed=42)[0].name
    manifest = json.loads((member / "boom_member.json").read_text())
    # two processes, each with its own batch of 8 per step
    assert manifest["training_result"]["steps"] == 3
    assert manifest["training_result"]["examples_seen"] == 3 * 8 * 2
    assert sorted(p.name for p in out.iterdir()) == [member.name]  # one output, no leftovers
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(member), device="cpu")
    assert model.encode(["a test"]).shape == (1, 32)


def test_cli_launcher_options_are_checked(tmp_path) -> None:
    from click.testing import CliRunner

    from boom_merge.cli import main

    data = tmp_path / "data"
    data.mkdir()
    (data / "d.jsonl").write_text('{"query": "q", "pos": ["p"]}\n')
    both = CliRunner().invoke(main, ["train", "--data", str(data), "--base", "b", "--out", str(tmp_path / "o"),
                                     "--launcher", "ray", "--member", "0"])
    assert both.exit_code == 1 and "exclude each other" in both.output
    stray = CliRunner().invoke(main, ["train", "--data", str(data), "--base", "b", "--out", str(tmp_path / "o"),
                                      "--address", "127.0.0.1:6379"])
    assert stray.exit_code == 1 and "--launcher ray" in stray.output
