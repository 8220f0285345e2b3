"""Models by name (boom_merge.model_refs): Hub ids through a real Hugging Face cache, refusals.

The cache is laid out exactly as ``hf download`` leaves it (``models--org--name/refs/main``
holding the commit, ``snapshots/SHA/<files>``); huggingface_hub itself resolves it. The
network case points ``HF_ENDPOINT`` at a closed local port.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from boom_merge.errors import BoomError
from boom_merge.model_refs import check_model, check_tokenizer, default_device, load_sentence_transformer, resolve_model

SHA = "0123456789abcdef0123456789abcdef01234567"
OLD_SHA = "fedcba9876543210fedcba9876543210fedcba98"


def place_in_cache(model: Path, cache: Path, repo_id: str, sha: str = SHA, ref: str | None = "main") -> Path:
    """Copy ``model`` into ``cache`` as ``hf download repo_id`` stores it; return the snapshot."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / sha
    blobs = repo / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    for file in sorted(p for p in model.rglob("*") if p.is_file()):
        blob = blobs / f"{abs(hash((sha, str(file.relative_to(model))))):x}"
        shutil.copyfile(file, blob)
        link = snapshot / file.relative_to(model)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    if ref is not None:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(sha)
    return snapshot


def test_local_dir_is_itself(tiny_bert_base: Path) -> None:
    resolved = resolve_model(tiny_bert_base)
    assert (resolved.path, resolved.hub_id, resolved.revision) == (tiny_bert_base.resolve(), None, None)
    assert resolved.spec == str(tiny_bert_base)


def test_hub_id_resolves_from_cache(tiny_bert_base: Path, hub_cache: Path) -> None:
    snapshot = place_in_cache(tiny_bert_base, hub_cache, "acme/tiny-bert")
    resolved = resolve_model("acme/tiny-bert")
    assert resolved.path == snapshot and resolved.path.is_dir()
    assert (resolved.hub_id, resolved.revision, resolved.name) == ("acme/tiny-bert", SHA, "acme/tiny-bert")
    # A local path given as the snapshot dir itself knows its id and commit too.
    assert (resolve_model(snapshot).hub_id, resolve_model(snapshot).revision) == ("acme/tiny-bert", SHA)


def test_hub_id_at_revision(tiny_bert_base: Path, tiny_bag, hub_cache: Path) -> None:
    base, _ = tiny_bag
    place_in_cache(tiny_bert_base, hub_cache, "acme/tiny", sha=SHA)
    old = place_in_cache(base, hub_cache, "acme/tiny", sha=OLD_SHA, ref="v1")
    assert resolve_model("acme/tiny@v1").path == old
    assert resolve_model(f"acme/tiny@{OLD_SHA}").revision == OLD_SHA
    assert resolve_model("acme/tiny").revision == SHA
    with pytest.raises(BoomError, match=r"^acme/tiny@v2: .*not .*in the Hugging Face cache.*HF_HUB_OFFLINE"):
        resolve_model("acme/tiny@v2")


def test_loads_by_id_and_embeds_like_the_dir(tiny_bert_base: Path, hub_cache: Path) -> None:
    place_in_cache(tiny_bert_base, hub_cache, "acme/tiny-bert")
    from sentence_transformers import SentenceTransformer

    by_id = load_sentence_transformer("acme/tiny-bert", device="cpu").encode(["a cat", "the sea"])
    by_dir = SentenceTransformer(str(tiny_bert_base), device="cpu").encode(["a cat", "the sea"])
    assert by_id.tolist() == by_dir.tolist()


@pytest.mark.parametrize("spec", ["acme/absent", "no/such/dir", "/nonexistent/model"])
def test_absent_model_offline_is_one_line(spec: str, hub_cache: Path) -> None:
    with pytest.raises(BoomError) as error:
        resolve_model(spec)
    message = str(error.value)
    assert message.startswith(f"{spec}: not a local directory") and "\n" not in message


def test_file_is_not_a_model(tmp_path: Path) -> None:
    (tmp_path / "recipe.yml").write_text("models: []\n")
    with pytest.raises(BoomError, match=r"recipe\.yml: not a model directory \(a file\)$"):
        resolve_model(tmp_path / "recipe.yml")


def test_closed_port_names_model_and_connection(tmp_path: Path) -> None:
    """Real process, HF_HUB_OFFLINE unset, empty cache, Hub at a closed port: one line, fast."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_OFFLINE"))}
    env.update(HF_HUB_CACHE=str(tmp_path / "empty"), HF_ENDPOINT="http://127.0.0.1:9",
               HF_HUB_ETAG_TIMEOUT="2", HF_HUB_DOWNLOAD_TIMEOUT="2")
    code = "from boom_merge.model_refs import resolve_model\nresolve_model('acme/tiny-bert@main')"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("boom_merge.errors.BoomError: acme/tiny-bert@main: ")
    assert "the Hub cannot be reached" in last and "Connect" in last and "refused" in last


def _copy(model: Path, tmp_path: Path, name: str) -> Path:
    return Path(shutil.copytree(model, tmp_path / name))


def test_no_tokenizer_refused_naming_files(tiny_bert_base: Path, tmp_path: Path) -> None:
    model = _copy(tiny_bert_base, tmp_path, "no-tok")
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        (model / name).unlink(missing_ok=True)
    with pytest.raises(BoomError, match=r"^.*no-tok: no tokenizer files \(missing tokenizer\.json, vocab\.txt"):
        check_model(model)
    check_model(model, tokenizer=False)
    (model / "vocab.json").write_text("{}")
    with pytest.raises(BoomError, match="vocab.json without merges.txt"):
        check_tokenizer(model)
    (model / "merges.txt").write_text("")
    check_tokenizer(model)


def _poison(file: Path, tensor: str, value: float) -> None:
    tensors = load_file(str(file))
    tensors[tensor] = tensors[tensor].clone()
    tensors[tensor].view(-1)[3] = value
    save_file(tensors, str(file), metadata={"format": "pt"})


def test_nan_weight_refused_naming_tensor(tiny_bert_base: Path, tmp_path: Path) -> None:
    model = _copy(tiny_bert_base, tmp_path, "nan")
    name = sorted(load_file(str(model / "model.safetensors")))[-1]
    _poison(model / "model.safetensors", name, float("nan"))
    with pytest.raises(BoomError, match=rf"model\.safetensors: tensor '{name}' contains NaN or Inf"):
        check_model(model)
    check_model(model, finite=False)
    with pytest.raises(BoomError, match="contains NaN or Inf"):
        load_sentence_transformer(model, device="cpu")


def test_inf_in_dense_head_refused(tiny_bag, tmp_path: Path) -> None:
    base, _ = tiny_bag
    model = _copy(base, tmp_path, "inf-dense")
    dense = next(model.glob("*_Dense"))
    _poison(dense / "model.safetensors", "linear.weight", float("inf"))
    with pytest.raises(BoomError, match=rf"{dense.name}/model\.safetensors: tensor 'linear.weight' contains NaN"):
        check_model(model)


def test_truncated_and_missing_config(tiny_bert_base: Path, tmp_path: Path) -> None:
    model = _copy(tiny_bert_base, tmp_path, "trunc")
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(BoomError, match=r"model\.safetensors: truncated safetensors file"):
        check_model(model)
    (model / "config.json").unlink()
    with pytest.raises(BoomError, match="missing config.json"):
        check_model(model)


def test_old_style_transformer_subfolder(tiny_bert_base: Path, tmp_path: Path) -> None:
    """sentence-transformers 0.x kept the transformer in 0_Transformer/: it is checked there."""
    model = tmp_path / "old"
    model.mkdir()
    sub = model / "0_Transformer"
    shutil.copytree(tiny_bert_base, sub, ignore=shutil.ignore_patterns("modules.json", "1_*", "2_*"))
    modules = json.loads((tiny_bert_base / "modules.json").read_text())
    modules[0]["path"] = "0_Transformer"
    (model / "modules.json").write_text(json.dumps(modules))
    check_model(model)
    for name in ("tokenizer.json", "vocab.txt"):
        (sub / name).unlink(missing_ok=True)
    with pytest.raises(BoomError, match=r"0_Transformer: no tokenizer files"):
        check_model(model)


def test_device() -> None:
    assert default_device() == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        from boom_merge.model_refs import check_device

        with pytest.raises(BoomError, match="^--device cuda: no CUDA device available"):
            check_device("cuda")
        assert check_device(None) == "cpu"


def test_a_cpu_load_flushes_subnormals_in_its_forward_only(tiny_bert_base: Path) -> None:
    """Subnormals are computed as zero while the model runs, and the processor's mode is the
    default again afterwards (a global mode left on broke hypothesis elsewhere in the suite)."""
    from boom_merge.model_refs import flushing_subnormals

    assert not flushing_subnormals()
    model = load_sentence_transformer(tiny_bert_base, device="cpu")
    assert not flushing_subnormals()
    seen: list[bool] = []
    model[0].auto_model.encoder.register_forward_pre_hook(lambda *_: seen.append(flushing_subnormals()))
    model.encode(["a sentence", "another one"])
    assert seen and all(seen)
    assert not flushing_subnormals()


def test_subnormals_flushed_restores_the_mode_it_found() -> None:
    from boom_merge.model_refs import flushing_subnormals, subnormals_flushed

    with pytest.raises(RuntimeError), subnormals_flushed():
        assert flushing_subnormals()
        raise RuntimeError
    assert not flushing_subnormals()
    torch.set_flush_denormal(True)
    try:
        with subnormals_flushed():
            pass
        assert flushing_subnormals()  # a caller that had it on keeps it on
    finally:
        torch.set_flush_denormal(False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.float8_e4m3fn])
def test_finite_check_agrees_with_the_element_check(dtype: torch.dtype) -> None:
    """The one-pass check (a finite sum proves no NaN/Inf) against torch.isfinite element by element,
    including sums that overflow although every value is finite, and Inf + -Inf (a NaN sum)."""
    from boom_merge.merge.checks import _finite

    big = torch.finfo(dtype).max
    cases = {
        "small": torch.randn(1000, dtype=torch.float32).to(dtype),
        "huge but finite (the sum overflows)": torch.full((8,), big, dtype=dtype),
        "nan": torch.tensor([1.0, float("nan"), 2.0]).to(dtype),
        "inf": torch.tensor([1.0, float("inf")]).to(dtype),
        "-inf": torch.tensor([float("-inf"), 3.0]).to(dtype),
        "inf and -inf": torch.tensor([float("inf"), float("-inf")]).to(dtype),
        "empty": torch.zeros(0, dtype=dtype),
    }
    for label, tensor in cases.items():
        assert _finite(tensor) == bool(torch.isfinite(tensor.double()).all()), label
    assert not _finite(cases["nan"]) and _finite(cases["huge but finite (the sum overflows)"])


def test_progress_bars_name_a_hub_model_by_its_id(tiny_bert_base: Path, hub_cache: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from boom_merge.lineage import model_sha256

    place_in_cache(tiny_bert_base, hub_cache, "acme/tiny-bert")
    snapshot = resolve_model("acme/tiny-bert").path
    check_model(snapshot)
    model_sha256("acme/tiny-bert")
    bars = capsys.readouterr().err
    assert "checking acme/tiny-bert" in bars and "hashing acme/tiny-bert" in bars
    assert SHA not in bars
    check_model(tiny_bert_base)
    assert f"checking {tiny_bert_base.name}" in capsys.readouterr().err
