"""Inputs as the Hub serves them, through every command that reads models (issue 24 section 1).

Each kind is a tiny base and two members stored the way some Hub repositories are: bf16 or fp16
weights; a decoder with tied embeddings stored as Qwen3-Embedding is (``Qwen3Model`` weights
without the ``model.`` prefix, a ``Qwen3ForCausalLM`` config with ``tie_word_embeddings``);
the transformer in a sentence-transformers 0.x subfolder (``0_Transformer/``); and
``pytorch_model.bin`` only, refused with the conversion hint unless ``--allow-pickle`` (merge and
incremental, the commands that merge weights). Each command runs on each kind: ``train`` (one
step), ``inspect``, ``tune`` (two candidates, a tiny dev set), ``recipe`` + ``merge``,
``incremental``, ``eval``, ``drift`` and ``push --dry-run`` (of the merge).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open
from sentence_transformers import SentenceTransformer

from boom_merge.cli import main
from tests.reference_merges import hand_merged_embeddings, np_multislerp
from tests.tiny_models import make_tiny_st

KINDS = ("bf16", "fp16", "tied", "subfolder", "pickle")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
HINT = "convert to safetensors (load and save it again), or pass --allow-pickle to merge, incremental or base"
TEXTS = ["An apple a day.", "def main(): return 0", "The quick brown fox"]


def _as_dtype(model: Path, dtype: torch.dtype) -> None:
    SentenceTransformer(str(model), device="cpu").to(dtype).save(str(model))


def _tied(model: Path) -> None:
    """Qwen3-Embedding's own config: the causal-LM class and tied embeddings over bare ``Qwen3Model`` weights."""
    config = json.loads((model / "config.json").read_text())
    config.update(architectures=["Qwen3ForCausalLM"], tie_word_embeddings=True)
    (model / "config.json").write_text(json.dumps(config, indent=2))


def _subfolder(model: Path) -> None:
    """sentence-transformers 0.x: the transformer (weights, config, tokenizer) in ``0_Transformer/``."""
    sub = model / "0_Transformer"
    sub.mkdir()
    for file in list(model.iterdir()):
        if file.is_file() and file.name not in ("modules.json", "config_sentence_transformers.json", "README.md"):
            shutil.move(str(file), sub / file.name)
    modules = json.loads((model / "modules.json").read_text())
    modules[0]["path"] = "0_Transformer"
    (model / "modules.json").write_text(json.dumps(modules, indent=2))


def _pickled(model: Path) -> None:
    from safetensors.torch import load_file

    torch.save(load_file(str(model / "model.safetensors")), model / "pytorch_model.bin")
    (model / "model.safetensors").unlink()


def _make(kind: str, path: Path, *, seed: int, perturb_from: Path | None = None) -> Path:
    arch = {"tied": "qwen3"}.get(kind, "bert")
    pooling = "lasttoken" if arch == "qwen3" else "mean"
    if perturb_from is None:
        make_tiny_st(path, arch=arch, pooling=pooling, seed=seed)
    else:
        make_tiny_st(path, seed=seed, perturb_from=perturb_from, perturb_scale=0.01 * seed)
    return path


def _apply(kind: str, model: Path) -> None:
    if kind in DTYPES:
        _as_dtype(model, DTYPES[kind])
    elif kind == "tied":
        _tied(model)
    elif kind == "subfolder":
        _subfolder(model)
    elif kind == "pickle":
        _pickled(model)


def _models(name: str, root: Path) -> tuple[Path, list[Path]]:
    """(base, two members): members perturbed from the base, all stored the kind's way."""
    base = _make(name, root / "base", seed=0)
    members = [_make(name, root / f"member-{i}", seed=i + 1, perturb_from=base) for i in range(2)]
    for model in (base, *members):
        _apply(name, model)
    return base, members


@pytest.fixture(scope="module", params=KINDS)
def kind(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, list[Path]]:
    """(kind, base, two members), as :func:`_models` makes them."""
    return request.param, *_models(request.param, tmp_path_factory.mktemp(request.param))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.test_evaluation import write_corpus

    return write_corpus(tmp_path_factory.mktemp("corpus") / "c")


def _run(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


def _refused_as_pickled(code: int, output: str, *models: Path) -> None:
    """One ``Error:`` line naming one of ``models`` (the first pickled input read) and the hint."""
    assert code != 0 and "Traceback" not in output, output
    line = output.rpartition("Error: ")[2]
    assert any(f"{model}: " in line for model in models) and HINT in line, output


def _weights(model: Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for file in model.glob("*.safetensors"):
        with safe_open(str(file), "pt") as handle:
            tensors |= {key: handle.get_tensor(key) for key in handle.keys()}
    return tensors


def test_inspect(kind) -> None:
    name, base, members = kind
    code, output = _run("inspect", *members, "--base", base, "--device", "cpu")
    if name == "pickle":
        return _refused_as_pickled(code, output, members[0])
    assert code == 0, output
    assert "overall" in output


def test_recipe_and_merge(kind, tmp_path: Path) -> None:
    name, base, members = kind
    recipe, out = tmp_path / "r.yml", tmp_path / "out"
    code, output = _run("recipe", *members, "-o", recipe, "--base", base)
    assert code == 0, output
    code, output = _run("merge", recipe, out)
    if name == "pickle":
        _refused_as_pickled(code, output, *members, base)
        assert not out.exists()
        code, output = _run("merge", recipe, out, "--allow-pickle")
    assert code == 0, output
    expected = hand_merged_embeddings([*members, base], lambda a: np_multislerp(a[:-1], [1, 1], a[-1]), TEXTS)
    got = SentenceTransformer(str(out), device="cpu").encode(TEXTS)
    assert np.abs(got - expected).max() <= (2e-2 if name in DTYPES else 1e-5)  # half precision: its rounding
    config = json.loads((out / "config.json").read_text())
    stored = {"bf16": "bfloat16", "fp16": "float16"}.get(name, "float32")
    assert config.get("dtype", config.get("torch_dtype")) == stored
    if name == "tied":  # the output names the class its inputs name
        assert config["tie_word_embeddings"] is True and config["architectures"] == ["Qwen3ForCausalLM"]
        assert set(_weights(out)) == set(_weights(members[0]))  # no lm_head, no prefix added
    if name == "subfolder":  # the output keeps today's layout: the transformer at the root
        assert json.loads((out / "modules.json").read_text())[0]["path"] == "" and not (out / "0_Transformer").exists()
    if name in ("tied", "subfolder"):  # plain mergekit-yaml goes through the same pipeline
        plain = subprocess.run(["mergekit-yaml", str(recipe), str(tmp_path / "plain")], capture_output=True,
                               text=True, timeout=300)
        assert plain.returncode == 0, plain.stderr
        ours, theirs = _weights(out), _weights(tmp_path / "plain")
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    code, output = _run("push", out, "--repo-id", "someone/tiny", "--dry-run")
    assert code == 0, output
    assert "--- README.md ---" in output and str(tmp_path) not in output


def test_incremental(kind, tmp_path: Path) -> None:
    name, _, (old, update) = kind
    out = tmp_path / "new"
    code, output = _run("incremental", old, update, "-o", out, "--update-weight", "0.5")
    if name == "pickle":
        _refused_as_pickled(code, output, old, update)
        code, output = _run("incremental", old, update, "-o", out, "--update-weight", "0.5", "--allow-pickle")
    assert code == 0, output
    assert np.isfinite(SentenceTransformer(str(out), device="cpu").encode(TEXTS)).all()


def test_train(kind, tmp_path: Path) -> None:
    from tests.test_training import QA, _write_jsonl

    name, base, _ = kind
    _write_jsonl(tmp_path / "data" / "qa.jsonl", [{"anchor": q, "positive": a} for q, a in QA])
    code, output = _run("train", "--data", tmp_path / "data", "--base", base, "--ratios", "100", "-o", tmp_path / "m",
                        "--max-steps", "1", "--batch-size", "8", "--group-size", "2", "--logging-steps", "1")
    if name == "pickle":
        return _refused_as_pickled(code, output, base)
    assert code == 0, output
    (member,) = [p for p in (tmp_path / "m").iterdir() if p.is_dir()]
    assert np.isfinite(SentenceTransformer(str(member), device="cpu").encode(TEXTS)).all()


def test_tune(kind, tmp_path: Path) -> None:
    from tests.test_tune import write_dev_corpus

    name, base, members = kind
    corpus = write_dev_corpus(tmp_path / "corpus")
    code, output = _run("tune", *members, "--full", members[1], "--base", base, "--corpus", corpus,
                        "-o", tmp_path / "tune", "--scales", "1", "--in-domain", "alpha", "--max-queries", "2",
                        "--max-corpus", "4", "--no-racing", "--device", "cpu")
    if name == "pickle":
        return _refused_as_pickled(code, output, *members, base)
    assert code == 0, output
    assert (tmp_path / "tune" / "recipe.yml").is_file()


def test_eval_and_drift(kind, corpus: Path, tmp_path: Path) -> None:
    name, base, members = kind
    code, output = _run("eval", members[0], "--corpus", corpus, "--out", tmp_path / "eval", "--tasks", "shell_utils",
                        "--max-queries", "2", "--device", "cpu")
    if name == "pickle":
        _refused_as_pickled(code, output, members[0])
    else:
        assert code == 0, output
        assert json.loads((tmp_path / "eval" / "summary.json").read_text())["scores"]
    code, output = _run("drift", base, members[0], "--data", corpus, "--max-queries", "2", "--device", "cpu")
    if name == "pickle":
        return _refused_as_pickled(code, output, base)
    assert code == 0, output
    assert "recall@10" in output


def _mapped_file(pointer: int) -> str | None:
    """The file whose memory mapping holds ``pointer`` (Linux ``/proc/self/maps``), None for anonymous memory."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        low, high = (int(x, 16) for x in parts[0].split("-"))
        if low <= pointer < high:
            return parts[5] if len(parts) == 6 else None
    return None


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="reads Linux's /proc/self/maps")
@pytest.mark.parametrize("name", sorted(DTYPES))
def test_the_kernel_reads_half_precision_inputs_in_place(name: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Peak memory flat in M: the BOOM kernel gets every bf16/fp16 input as the pages of its file (no float32
    copy of all M inputs, no read into memory); it widens one input at a time itself."""
    from boom_merge.merge import methods
    from boom_merge.merge.pipeline import merge_recipe

    base, members = _models(name, tmp_path / "models")
    seen: list[list[str | None]] = []
    combine = methods.combine

    def spy(tensors, *args, **kwargs):
        seen.append([_mapped_file(t.data_ptr()) for t in (*tensors, *args[2:3], kwargs.get("origin"))
                     if isinstance(t, torch.Tensor) and t.numel() > 1024])
        return combine(tensors, *args, **kwargs)

    monkeypatch.setattr(methods, "combine", spy)
    recipe = tmp_path / "r.yml"
    recipe.write_text(json.dumps({"merge_method": "boom", "base_model": str(base),
                                  "models": [{"model": str(m)} for m in members]}))
    merge_recipe(recipe, tmp_path / "out")
    files = {str(m / "model.safetensors") for m in (base, *members)}
    big = [where for call in seen for where in call]
    assert len(big) >= 3 * 5 and set(big) <= files, big  # members and base of every big tensor, in place
