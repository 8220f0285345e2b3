"""``boom-merge base``: tiny plain language models (decoders and an encoder, a GGUF file) made embedding
bases, their embeddings checked against the transformers model computed by hand, their card and
provenance carried through training and a merge, and bad input refused in one line."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from huggingface_hub.repocard import metadata_load
from sentence_transformers import SentenceTransformer
from transformers import AutoModel, AutoTokenizer

from boom_merge.cli import main
from boom_merge.embedding_base import BaseSettings, make_base
from boom_merge.lineage import hub_bases, read_lineage, read_member_manifest
from boom_merge.model_refs import check_model
from tests.test_models import SHA, place_in_cache
from tests.tiny_models import make_tiny_lm, make_tiny_st, write_tiny_gguf

TEXTS = ["the quick brown fox", "how do I read a file line by line in python", "keys", "a query about modules"]
QUERY_PROMPT = "Instruct: Given a question, retrieve passages that answer it\nQuery: "


@pytest.fixture(scope="module")
def lms(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lms")
    return {arch: make_tiny_lm(root / arch, arch=arch) for arch in ("qwen3", "llama", "gemma3", "bert")}


def _hidden(model_dir: Path, text: str, **config: object) -> torch.Tensor:
    """The last hidden states of ``text`` alone (no padding) from the plain transformers model."""
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModel.from_pretrained(str(model_dir), **config).eval()
    with torch.no_grad():
        return model(**tokenizer(text, return_tensors="pt")).last_hidden_state[0]


def _encode(model: SentenceTransformer, side: str | None = None, **kwargs: object) -> torch.Tensor:
    if side is not None:
        model.tokenizer.padding_side = side
    return model.encode(TEXTS, batch_size=len(TEXTS), convert_to_tensor=True, **kwargs)


def _unit(rows: list[torch.Tensor]) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.stack(rows), dim=-1)


@pytest.mark.parametrize("arch", ["qwen3", "llama"])
def test_decoder_base_pools_the_last_token_with_either_padding_side(lms, arch, tmp_path) -> None:
    out = make_base(lms[arch], tmp_path / "base", BaseSettings(query_prompt=QUERY_PROMPT))
    check_model(out)  # what `train --base` checks first
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert config["pad_token"] == "<|endoftext|>" and config["padding_side"] == "left"  # the LM has no pad token
    assert json.loads((out / "config.json").read_text())["pad_token_id"] == 0  # <|endoftext|>
    model = SentenceTransformer(str(out), device="cpu")
    assert [type(m).__name__ for m in model] == ["Transformer", "Pooling", "Normalize"]
    expected = _unit([_hidden(lms[arch], text)[-1] for text in TEXTS])
    for side in ("left", "right"):  # padding differs per row: the last real token is read either way
        torch.testing.assert_close(_encode(model, side), expected, atol=1e-5, rtol=1e-4)
    prompted = _unit([_hidden(lms[arch], QUERY_PROMPT + text)[-1] for text in TEXTS])
    torch.testing.assert_close(_encode(model, "left", prompt_name="query"), prompted, atol=1e-5, rtol=1e-4)
    lineage = read_lineage(out)
    assert lineage.kind == "base" and lineage.source["path"] == str(lms[arch].resolve())
    assert lineage.data["settings"]["pooling"] == "lasttoken" and lineage.data["settings"]["decoder"] is True
    assert metadata_load(out / "README.md")["base_model"] == arch  # a local dir: its name


def test_encoder_base_pools_the_mean_and_cls_without_normalize(lms, tmp_path) -> None:
    hidden = [_hidden(lms["bert"], text) for text in TEXTS]
    mean = SentenceTransformer(str(make_base(lms["bert"], tmp_path / "mean")), device="cpu")
    assert [type(m).__name__ for m in mean] == ["Transformer", "Pooling", "Normalize"]
    torch.testing.assert_close(_encode(mean), _unit([h.mean(0) for h in hidden]), atol=1e-5, rtol=1e-4)
    cls = make_base(lms["bert"], tmp_path / "cls", BaseSettings(pooling="cls", normalize=False, max_seq_length=32))
    model = SentenceTransformer(str(cls), device="cpu")
    assert [type(m).__name__ for m in model] == ["Transformer", "Pooling"] and model.max_seq_length == 32
    torch.testing.assert_close(_encode(model), torch.stack([h[0] for h in hidden]), atol=1e-5, rtol=1e-4)
    assert json.loads((cls / "tokenizer_config.json").read_text())["pad_token"] == "[PAD]"  # its own, kept


def test_bidirectional_gemma3_attends_both_ways(lms, tmp_path) -> None:
    lm = lms["gemma3"]
    both = make_base(lm, tmp_path / "bi", BaseSettings(pooling="mean", bidirectional=True))
    causal = make_base(lm, tmp_path / "causal", BaseSettings(pooling="mean"))
    config = json.loads((both / "config.json").read_text())
    assert config["use_bidirectional_attention"] is True
    assert config["sliding_window"] == json.loads((lm / "config.json").read_text())["sliding_window"]  # saved as given
    switched = shutil.copytree(lm, tmp_path / "switched")  # the LM with the switch on in its config.json
    (switched / "config.json").write_text(json.dumps({**json.loads((lm / "config.json").read_text()),
                                                      "use_bidirectional_attention": True}))  # fmt: skip
    bi, one_way = (_encode(SentenceTransformer(str(model), device="cpu")) for model in (both, causal))
    torch.testing.assert_close(bi, _unit([_hidden(switched, t).mean(0) for t in TEXTS]), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(one_way, _unit([_hidden(lm, t).mean(0) for t in TEXTS]), atol=1e-5, rtol=1e-4)
    assert (bi - one_way).abs().max() > 1e-3  # the switch changes what the model computes


def test_a_gguf_file_is_dequantized_into_a_base(tmp_path) -> None:
    """A tiny Llama GGUF written with gguf's writer; transformers reads it (the real gemma file: benchmarks/)."""
    pytest.importorskip("gguf")
    file = write_tiny_gguf(tmp_path / "tiny-llama-F32.gguf")
    out = make_base(file, tmp_path / "base")
    check_model(out)
    model = SentenceTransformer(str(out), device="cpu")
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=file.name)
    plain = AutoModel.from_pretrained(str(tmp_path), gguf_file=file.name).eval()
    with torch.no_grad():
        expected = _unit([plain(**tokenizer(t, return_tensors="pt")).last_hidden_state[0, -1] for t in TEXTS])
    for side in ("left", "right"):
        torch.testing.assert_close(_encode(model, side), expected, atol=1e-5, rtol=1e-4)
    assert metadata_load(out / "README.md")["base_model"] == file.name
    assert read_lineage(out).source["name"] == file.name and hub_bases(out) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base", file.name]  # the scratch dir is gone


def test_hub_base_is_named_by_members_and_their_merge(lms, hub_cache, tmp_path) -> None:
    from boom_merge.merge.pipeline import merge_recipe
    from boom_merge.training import TrainConfig, train_members

    place_in_cache(lms["qwen3"], hub_cache, "acme/tiny-lm")
    result = CliRunner().invoke(main, ["base", "acme/tiny-lm", "-o", str(tmp_path / "base"), "--max-seq-length", "32"])
    assert result.exit_code == 0, result.output
    base = tmp_path / "base"
    assert metadata_load(base / "README.md")["base_model"] == "acme/tiny-lm"
    assert read_lineage(base).source.items() >= {"hub_id": "acme/tiny-lm", "revision": SHA}.items()
    assert hub_bases(base) == ["acme/tiny-lm"]

    data = tmp_path / "data" / "qa.jsonl"
    data.parent.mkdir()
    data.write_text("".join(json.dumps({"query": f"question {i} about {w}", "pos": [f"{w} answer {i}"]}) + "\n"
                            for i, w in enumerate(["files", "keys", "modules", "classes"] * 4)))  # fmt: skip
    config = TrainConfig(max_steps=2, batch_size=4, group_size=1, learning_rate=1e-3, warmup_ratio=0.0)
    train_members(data.parent, str(base), "50,100", tmp_path / "members", config, seed=1)
    members = sorted((tmp_path / "members").iterdir())
    for member in members:
        manifest = read_member_manifest(member)
        assert manifest.base_model == str(base.resolve()) and manifest.base_model_id == "acme/tiny-lm"
    recipe = tmp_path / "linear.yml"
    recipe.write_text(yaml.safe_dump({"merge_method": "linear", "models": [{"model": str(m), "parameters": {"weight": 1.0}}
                                                                             for m in members]}))  # fmt: skip
    merged = merge_recipe(recipe, tmp_path / "merged")
    assert hub_bases(merged) == ["acme/tiny-lm"]
    assert "acme/tiny-lm" in str(metadata_load(merged / "README.md")["base_model"])


# --- bad input: one line naming FROM, nothing written -----------------------------------


def _fails(source: Path | str, out: Path, *needles: str, args: tuple[str, ...] = ()) -> None:
    result = CliRunner().invoke(main, ["base", str(source), "-o", str(out), *args])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = [line for line in re.split(r"[\r\n]", result.output) if line.startswith("Error: ")]
    assert len(errors) == 1 and str(source) in errors[0], result.output
    for needle in needles:
        assert needle in errors[0], errors[0]
    assert not out.exists() and not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]


def test_bad_input_is_one_line_naming_from(lms, tiny_bert_base, tmp_path, monkeypatch) -> None:
    out = tmp_path / "out"
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not a model")
    _fails(empty, out, "not a transformer")
    text = tmp_path / "weights.txt"
    text.write_text("not a model")
    _fails(text, out, "not a transformer")
    no_class = tmp_path / "no-class"
    no_class.mkdir()
    (no_class / "config.json").write_text(json.dumps({"model_type": "blip_2_vision_model"}))
    _fails(no_class, out, "no base model class")
    _fails(tiny_bert_base, out, "already a sentence-transformers model")
    corrupt = tmp_path / "broken.gguf"
    corrupt.write_bytes(b"GGUF" + bytes(range(256)) * 4)
    _fails(corrupt, out, "not a GGUF file gguf")
    unsupported = tmp_path / "unsupported.gguf"
    writer = pytest.importorskip("gguf").GGUFWriter(str(unsupported), "rwkv6")  # an architecture transformers lacks
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    _fails(unsupported, out, "cannot load this GGUF file")
    _fails(lms["qwen3"], out, "no bidirectional attention switch", args=("--bidirectional",))
    _fails(lms["bert"], out, "is an encoder", args=("--bidirectional",))
    positions = json.loads((lms["bert"] / "config.json").read_text())["max_position_embeddings"]
    _fails(lms["bert"], out, f"--max-seq-length {positions + 1} is above the model's {positions} positions",
           args=("--max-seq-length", str(positions + 1)))
    monkeypatch.setitem(__import__("sys").modules, "gguf", None)  # the optional extra not installed
    _fails(corrupt, out, "pip install 'boom-merge[gguf]'")


def test_out_rules_apply(lms, tmp_path) -> None:
    make_tiny_st(tmp_path / "taken")  # not boom-merge's: never replaced, not even with --force
    _fails_out = CliRunner().invoke(main, ["base", str(lms["bert"]), "-o", str(tmp_path / "taken"), "--force"])
    assert _fails_out.exit_code == 1 and "Error: " in _fails_out.output
    inside = CliRunner().invoke(main, ["base", str(lms["bert"]), "-o", str(lms["bert"] / "sub")])
    assert inside.exit_code == 1 and not (lms["bert"] / "sub").exists()


# --- push, pickles, options, GGUF repos, long contexts ------------------------------------


def test_a_base_pushes_naming_its_source_never_a_local_path(lms, hub_cache, tmp_path) -> None:
    """`push --dry-run` of bases made from a Hub id and from a local GGUF file: the card and the uploaded
    provenance name the source LM by Hub id or file name."""
    from boom_merge.hub import plan_push
    from boom_merge.lineage import LINEAGE_FILE

    place_in_cache(lms["qwen3"], hub_cache, "acme/tiny-lm")
    from_hub = make_base("acme/tiny-lm", tmp_path / "from-hub")
    result = CliRunner().invoke(main, ["push", str(from_hub), "--repo-id", "someone/tiny-base", "--dry-run"])
    assert result.exit_code == 0, result.output
    listed, _, card = result.output.partition("\n--- README.md ---\n")
    assert "boom_lineage.json" in listed and str(tmp_path) not in result.output
    (tmp_path / "card.md").write_text(card)
    meta = metadata_load(tmp_path / "card.md")
    assert meta["base_model"] == "acme/tiny-lm" and "boom-base" in meta["tags"]
    assert "embedding base" in card and "lasttoken" in card
    plan = plan_push(from_hub, "someone/tiny-base")
    uploaded = json.loads(plan.portable.get(LINEAGE_FILE) or (from_hub / LINEAGE_FILE).read_bytes())
    assert uploaded["source"].items() >= {"path": "acme/tiny-lm", "hub_id": "acme/tiny-lm", "revision": SHA}.items()
    assert str(tmp_path) not in plan.card

    pytest.importorskip("gguf")
    (tmp_path / "models").mkdir()
    file = write_tiny_gguf(tmp_path / "models" / "tiny-llama-F32.gguf")
    from_file = make_base(file, tmp_path / "from-file")
    plan = plan_push(from_file, "someone/tiny-base")
    assert str(tmp_path) not in plan.card + plan.portable[LINEAGE_FILE].decode()
    assert file.name in plan.card and json.loads(plan.portable[LINEAGE_FILE])["source"]["path"] == file.name


def test_pickled_weights_need_allow_pickle(lms, tmp_path) -> None:
    from safetensors.torch import load_file

    pickled = shutil.copytree(lms["llama"], tmp_path / "pickled")  # as old Hub repos are: pytorch_model.bin only
    torch.save(load_file(pickled / "model.safetensors"), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    assert (pickled / "pytorch_model.bin").is_file() and not list(pickled.glob("*.safetensors"))
    _fails(pickled, tmp_path / "out", "pass --allow-pickle")
    result = CliRunner().invoke(main, ["base", str(pickled), "-o", str(tmp_path / "out"), "--allow-pickle"])
    assert result.exit_code == 0, result.output
    model = SentenceTransformer(str(tmp_path / "out"), device="cpu")
    torch.testing.assert_close(_encode(model), _unit([_hidden(lms["llama"], t)[-1] for t in TEXTS]),
                               atol=1e-5, rtol=1e-4)  # fmt: skip


def test_options_come_from_base_settings() -> None:
    """Each BaseSettings field is a flag whose help is the field's description (one place for each fact)."""
    from dataclasses import fields

    from boom_merge.cli.base import base_command

    params = {p.name: p for p in base_command.params}
    for field in fields(BaseSettings):
        assert params[field.name].help == field.metadata["help"], field.name
    spelled = {flag for p in base_command.params for flag in (*p.opts, *p.secondary_opts)}
    assert spelled >= {"--pooling", "--normalize", "--no-normalize", "--bidirectional", "--max-seq-length",
                       "--query-prompt", "--document-prompt", "--force", "-o", "--out", "--allow-pickle"}  # fmt: skip
    assert params["pooling"].type.choices == ("lasttoken", "mean", "cls")
    bad = CliRunner().invoke(main, ["base", "x", "-o", "y", "--max-seq-length", "0"])
    assert bad.exit_code == 1 and "max sequence length must be at least 1" in bad.output


def test_a_gguf_only_hub_repo_resolves_to_its_file(hub_cache, tmp_path) -> None:
    pytest.importorskip("gguf")
    repo = tmp_path / "repo"
    repo.mkdir()
    file = write_tiny_gguf(repo / "tiny-llama-F32.gguf")
    (repo / "README.md").write_text("---\nlicense: mit\n---\n# tiny\n")
    place_in_cache(repo, hub_cache, "acme/tiny-GGUF")
    result = CliRunner().invoke(main, ["base", "acme/tiny-GGUF", "-o", str(tmp_path / "base")])
    assert result.exit_code == 0, result.output
    base = tmp_path / "base"
    assert metadata_load(base / "README.md")["base_model"] == "acme/tiny-GGUF"
    assert read_lineage(base).source.items() >= {"hub_id": "acme/tiny-GGUF", "revision": SHA}.items()
    assert hub_bases(base) == ["acme/tiny-GGUF"]
    plain = AutoModel.from_pretrained(str(repo), gguf_file=file.name).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(repo), gguf_file=file.name)
    with torch.no_grad():
        expected = _unit([plain(**tokenizer(t, return_tensors="pt")).last_hidden_state[0, -1] for t in TEXTS])
    torch.testing.assert_close(_encode(SentenceTransformer(str(base), device="cpu")), expected, atol=1e-5, rtol=1e-4)

    shutil.copyfile(file, repo / "tiny-llama-Q8_0.gguf")  # several quantizations: the user picks one
    place_in_cache(repo, hub_cache, "acme/two-GGUF")
    _fails("acme/two-GGUF", tmp_path / "out", "tiny-llama-F32.gguf", "tiny-llama-Q8_0.gguf", "hf download")


def test_a_long_default_max_length_is_warned_about(lms, tmp_path, caplog) -> None:
    long = shutil.copytree(lms["qwen3"], tmp_path / "long")
    config = json.loads((long / "config.json").read_text())
    (long / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 32768}))
    tokenizer = json.loads((long / "tokenizer_config.json").read_text())
    (long / "tokenizer_config.json").write_text(json.dumps({**tokenizer, "model_max_length": 32768}))
    with caplog.at_level("WARNING", logger="boom_merge"):
        make_base(long, tmp_path / "default")
    ours = [r for r in caplog.records if r.name.startswith("boom_merge")]  # transformers may warn too (load report)
    warnings = [r.getMessage() for r in ours if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "32768" in warnings[0] and "--max-seq-length" in warnings[0], warnings
    assert SentenceTransformer(str(tmp_path / "default"), device="cpu").max_seq_length == 32768
    caplog.clear()
    with caplog.at_level("WARNING", logger="boom_merge"):
        make_base(long, tmp_path / "chosen", BaseSettings(max_seq_length=512))
        make_base(lms["qwen3"], tmp_path / "short")
    assert not [r for r in caplog.records if r.levelname == "WARNING" and r.name.startswith("boom_merge")]
