"""The trainer's options on the tiny BERT: Hub bases, losses, cross-device negatives, dev evaluation,
instructions, kept checkpoints, and the CLI generated from TrainConfig.

Numbers are checked against independent numpy computations (InfoNCE over the batch, nDCG@10).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from huggingface_hub import ModelCard
from sentence_transformers import SentenceTransformer

from boom_merge.cli import main
from boom_merge.data.loading import Example
from boom_merge.data.sampling import plan_members
from boom_merge.errors import BoomError
from boom_merge.lineage import MEMBER_FILE
from boom_merge.training import TrainConfig, train_member, train_members, training_rows
from boom_merge.training.trainer import build_loss, training_arguments
from tests.test_models import SHA, place_in_cache
from tests.test_training import QA, TINY, _state, _write_jsonl, corpus  # noqa: F401  (corpus: fixture)

ANCHORS = ["how do I sort a list", "what is a prime number", "who wrote Hamlet", "boiling point of water"]
POSITIVES = ["use sorted() or list.sort()", "a number with exactly two divisors", "William Shakespeare", "100 °C"]
NEGATIVES = ["lists are mutable", "even numbers are divisible by two", "Hamlet is a prince", "ice melts at 0 °C"]


def _infonce(queries: np.ndarray, docs: np.ndarray, temperature: float) -> float:
    """Mean -log softmax of query i over all docs, the right one being doc i (cosine similarity)."""
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    docs = docs / np.linalg.norm(docs, axis=1, keepdims=True)
    logits = queries @ docs.T / temperature
    logits -= logits.max(axis=1, keepdims=True)
    log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return float(-np.mean(np.diag(log_softmax)))


# --- Hub bases ---------------------------------------------------------------------------------


def test_hub_id_base_trains_and_is_recorded(
    corpus: Path, tiny_bert_base: Path, hub_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--base org/name`` resolves through the HF cache; the manifest records the id and commit, never a cache path;
    a rerun of finished members (reporting options changed) resolves once and hashes nothing."""
    import boom_merge.training.manifest as manifest_module

    place_in_cache(tiny_bert_base, hub_cache, "acme/tiny-bert")
    config = TrainConfig(max_steps=2, **TINY)
    out = tmp_path / "m"
    paths = train_members(corpus, "acme/tiny-bert", "50,100", out, config, seed=1)
    for path in paths:
        manifest = json.loads((path / MEMBER_FILE).read_text())
        assert manifest["base_model"] == "acme/tiny-bert" and manifest["base_model_revision"] == SHA
        assert manifest["base_model_sha256"] == manifest_module.model_sha256(tiny_bert_base)
        assert str(hub_cache) not in json.dumps(manifest)
        card = ModelCard.load(path / "README.md")  # the card sentence-transformers wrote after training
        assert card.data.base_model == "acme/tiny-bert" and f"at revision {SHA}" in card.text
    at_rev = train_member(corpus, f"acme/tiny-bert@{SHA}", plan_members("50", seed=1)[0], tmp_path / "r", config)
    assert json.loads((at_rev / MEMBER_FILE).read_text())["base_model_revision"] == SHA

    import boom_merge.model_refs as models_module

    hashed, resolved = [], []
    real_hash, real_resolve = manifest_module.model_sha256, models_module.resolve_model
    monkeypatch.setattr(manifest_module, "model_sha256", lambda p: hashed.append(p) or real_hash(p))
    monkeypatch.setattr(models_module, "resolve_model", lambda s: resolved.append(s) or real_resolve(s))
    before = [(p / "model.safetensors").stat().st_mtime_ns for p in paths]
    reporting = replace(config, logging_steps=3, save_steps=7)  # options that never change the weights
    assert train_members(corpus, "acme/tiny-bert", "50,100", out, reporting, seed=1) == paths
    assert [(p / "model.safetensors").stat().st_mtime_ns for p in paths] == before
    assert hashed == [] and resolved == ["acme/tiny-bert"]


def test_hub_base_unreachable_is_one_line(corpus: Path, tmp_path: Path) -> None:
    """Empty cache, HF_HUB_OFFLINE unset, the Hub at a closed port: one line naming the model and the problem."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env |= {"HF_HUB_CACHE": str(tmp_path / "empty"), "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_ETAG_TIMEOUT": "2"}
    command = [shutil.which("boom-merge"), "train", "--data", str(corpus), "--base", "acme/absent", "-o",
               str(tmp_path / "out"), "--max-steps", "1"]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stdout + result.stderr
    assert lines[0].startswith("Error: acme/absent: ") and "cannot be reached" in lines[0], lines[0]
    assert "Connect" in lines[0] or "connect" in lines[0], lines[0]
    assert not (tmp_path / "out").exists()


# --- losses ------------------------------------------------------------------------------------


def _features(model: SentenceTransformer, columns: list[list[str]]) -> list[dict[str, torch.Tensor]]:
    return [model.preprocess(texts) for texts in columns]


@pytest.mark.parametrize("loss", ["mnrl", "cached-mnrl"])
def test_losses_equal_infonce_with_hard_negatives(tiny_bert_base: Path, loss: str) -> None:
    model = SentenceTransformer(str(tiny_bert_base), device="cpu").eval()
    config = TrainConfig(loss=loss, mini_batch_size=3, temperature=0.02, group_size=2)
    value = build_loss(model, config)(_features(model, [ANCHORS, POSITIVES, NEGATIVES]), None)
    value.backward()  # cached-mnrl's GradCache backward runs too
    encode = lambda texts: model.encode(texts, convert_to_numpy=True)  # noqa: E731
    expected = _infonce(encode(ANCHORS), np.concatenate([encode(POSITIVES), encode(NEGATIVES)]), 0.02)
    assert value.item() == pytest.approx(expected, rel=1e-4)
    assert expected != pytest.approx(_infonce(encode(ANCHORS), encode(POSITIVES), 0.02), rel=1e-3)


_GATHER_WORKER = textwrap.dedent(
    """
    import json, os, sys
    import torch, torch.distributed as dist
    from sentence_transformers import SentenceTransformer
    from boom_merge.training import TrainConfig
    from boom_merge.training.trainer import build_loss

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    base, out, batches = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    model = SentenceTransformer(base, device="cpu").eval()
    result = {}
    for loss in ("mnrl", "cached-mnrl"):
        config = TrainConfig(loss=loss, mini_batch_size=2, temperature=0.05, gather_across_devices=True)
        columns = [batches[rank][key] for key in ("anchor", "positive", "negative")]
        value = build_loss(model, config)([model.preprocess(texts) for texts in columns], None)
        value.backward()
        result[loss] = value.item()
    json.dump(result, open(os.path.join(out, f"rank{rank}.json"), "w"))
    dist.destroy_process_group()
    """
)


def test_gather_across_devices_sees_the_other_process_negatives(tiny_bert_base: Path, tmp_path: Path) -> None:
    """2 gloo processes: each one's loss is InfoNCE of its own queries over both processes' passages."""
    batches = [
        {"anchor": ANCHORS[:2], "positive": POSITIVES[:2], "negative": NEGATIVES[:2]},
        {"anchor": ANCHORS[2:], "positive": POSITIVES[2:], "negative": NEGATIVES[2:]},
    ]
    script = tmp_path / "worker.py"
    script.write_text(_GATHER_WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
               str(tiny_bert_base), str(tmp_path), json.dumps(batches)]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    model = SentenceTransformer(str(tiny_bert_base), device="cpu").eval()
    encode = lambda texts: model.encode(texts, convert_to_numpy=True)  # noqa: E731
    everything = np.concatenate([encode(POSITIVES), encode(NEGATIVES)])  # order does not change a softmax
    for rank, batch in enumerate(batches):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        queries = encode(batch["anchor"])
        logits_all = _infonce_rows(queries, everything, rank * 2)
        local = _infonce(queries, np.concatenate([encode(batch["positive"]), encode(batch["negative"])]), 0.05)
        for loss in ("mnrl", "cached-mnrl"):
            assert got[loss] == pytest.approx(logits_all, rel=1e-4), (rank, loss)
            assert got[loss] != pytest.approx(local, rel=1e-3)  # the other process's passages count


def _infonce_rows(queries: np.ndarray, docs: np.ndarray, offset: int) -> float:
    """InfoNCE of ``queries`` whose positives are ``docs[offset + i]``."""
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    docs = docs / np.linalg.norm(docs, axis=1, keepdims=True)
    logits = queries @ docs.T / 0.05
    log_z = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
    return float(np.mean(log_z - logits[np.arange(len(queries)), offset + np.arange(len(queries))]))


# --- arguments, instructions -------------------------------------------------------------------


def test_training_arguments_follow_the_config(tmp_path: Path) -> None:
    args = training_arguments(TrainConfig(gradient_checkpointing=True, eval_steps=7), tmp_path, 0)
    assert args.gradient_checkpointing and args.eval_strategy == "steps" and args.eval_steps == 7
    assert args.report_to in ([], "none", ["none"])
    with pytest.raises(BoomError, match="--report-to nosuchtracker: not installed"):
        training_arguments(TrainConfig(report_to="nosuchtracker"), tmp_path, 0)
    with pytest.raises(BoomError, match="keep checkpoints needs full weights"):
        TrainConfig(keep_checkpoints=2, lora=True)


def test_instructions_per_dataset() -> None:
    examples = [Example(id=1, query="q1", pos=("p1",), neg=("n1",)), Example(id=2, query="q2", pos=("p2",),
                prompt="Own: ")]  # fmt: skip
    config = TrainConfig(group_size=1, instructions={"defs": "Given a word, retrieve its definition"}, query_prompt="Q: ")
    rows = training_rows(examples, [0, 1], config, seed=0, dataset="defs")
    assert rows["anchor"] == ["Instruct: Given a word, retrieve its definition\nQuery: q1", "Own: q2"]
    assert training_rows(examples, [0], config, seed=0, dataset="other")["anchor"] == ["Q: q1"]


def test_cli_options_are_the_config_fields(corpus: Path, tiny_bert_base: Path, tmp_path: Path) -> None:
    from boom_merge.cli.train import train_command, train_update_command

    for command in (train_command, train_update_command):
        params = {p.name: p for p in command.params}
        for field in fields(TrainConfig):
            assert field.name in params, (command.name, field.name)
            if field.name != "instructions":
                assert params[field.name].default == field.default, field.name
    out = tmp_path / "m"
    common = ["train", "--data", str(corpus), "--base", str(tiny_bert_base), "-o", str(out), "--ratios", "100"]
    args = common + [
            "--batch-size", "4", "--max-steps", "1", "--learning-rate", "1e-3", "--loss", "cached-mnrl",
            "--mini-batch-size", "3", "--temperature", "0.02", "--group-size", "3", "--gradient-checkpointing",
            "--instruction", "qa=Answer the question", "--instruction-template", "Do: {task}\\nQ: "]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    member = out / "member-0-r100"
    recorded = json.loads((member / MEMBER_FILE).read_text())["training_args"]
    assert recorded["loss"] == "cached-mnrl" and recorded["mini_batch_size"] == 3
    assert recorded["temperature"] == 0.02 and recorded["group_size"] == 3 and recorded["gradient_checkpointing"]
    assert recorded["learning_rate"] == 1e-3 and recorded["instructions"] == {"qa": "Answer the question"}
    assert SentenceTransformer(str(member), device="cpu").prompts["qa"] == "Do: Answer the question\nQ: "
    bad = CliRunner().invoke(main, common + ["--instruction", "nosuch=x"])
    assert bad.exit_code == 1 and "--instruction for unknown datasets ['nosuch']" in bad.output


def test_freeze_embeddings_keeps_the_token_table_and_trains_the_rest(
    corpus: Path, tiny_bert_base: Path, tmp_path: Path
) -> None:
    config = TrainConfig(batch_size=4, max_steps=2, learning_rate=1e-2, freeze_embeddings=True)
    member = train_member(corpus, str(tiny_bert_base), plan_members("100", seed=0)[0], tmp_path / "m", config)
    before, after = _state(tiny_bert_base), _state(member)
    table = next(k for k in before if k.endswith("word_embeddings.weight"))
    assert torch.equal(before[table], after[table])
    changed = [k for k in before if before[k].is_floating_point() and not torch.equal(before[k], after[k])]
    assert changed and table not in changed and any("layer.0" in k for k in changed)
    assert json.loads((member / MEMBER_FILE).read_text())["training_args"]["freeze_embeddings"] is True
    with pytest.raises(BoomError, match="freeze embeddings is for full fine-tuning"):
        TrainConfig(freeze_embeddings=True, lora=True)


# --- dev evaluation, kept checkpoints ------------------------------------------------------------


def _dev_corpus(tmp_path: Path, corpus: Path) -> Path:
    """CORPUS/train (a copy) + CORPUS/dev/qa in the BEIR layout: the QA pairs, reworded questions."""
    root = tmp_path / "corpus"
    shutil.copytree(corpus, root / "train")
    dev = root / "dev" / "qa"
    _write_jsonl(dev / "queries.jsonl", [{"_id": f"q{i}", "text": q.replace("What", "Which")} for i, (q, _) in
                                          enumerate(QA)])  # fmt: skip
    _write_jsonl(dev / "corpus.jsonl", [{"_id": f"d{i}", "title": "", "text": a} for i, (_, a) in enumerate(QA)])
    (dev / "qrels").mkdir()
    (dev / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in
                                                                                     range(len(QA))))  # fmt: skip
    return root


def _ndcg10(model_dir: Path) -> float:
    """nDCG@10 with one relevant document per query (query i -> document i), by brute force."""
    model = SentenceTransformer(str(model_dir), device="cpu")
    queries = model.encode([q.replace("What", "Which") for q, _ in QA], convert_to_numpy=True)
    docs = model.encode([a for _, a in QA], convert_to_numpy=True)
    ranks = [int((row > row[i]).sum()) for i, row in enumerate(queries @ docs.T)]
    return float(np.mean([1 / math.log2(rank + 2) if rank < 10 else 0.0 for rank in ranks]))


def test_eval_steps_on_the_dev_split_and_held_out_pairs(corpus: Path, tiny_bert_base: Path, tmp_path: Path) -> None:
    root = _dev_corpus(tmp_path, corpus)
    spec = plan_members("50", seed=0)[0]
    config = TrainConfig(max_steps=4, eval_steps=2, **TINY)
    member = train_member(root / "train", str(tiny_bert_base), spec, tmp_path / "a", config)  # default ../dev
    dev = json.loads((member / MEMBER_FILE).read_text())["dev"]
    assert dev["kind"] == "retrieval" and dev["datasets"] == ["qa"] and dev["last"]["step"] == 4
    assert dev["last"]["eval_dev_qa_cosine_ndcg@10"] == pytest.approx(_ndcg10(member), abs=1e-6)
    pairs = train_member(corpus, str(tiny_bert_base), spec, tmp_path / "b", config, dev=corpus)
    dev = json.loads((pairs / MEMBER_FILE).read_text())["dev"]
    assert dev["kind"] == "pairs" and {"eval_qa_loss", "eval_modules_loss"} <= set(dev["last"])
    with pytest.raises(BoomError, match="--eval-steps needs a dev split"):
        train_member(corpus, str(tiny_bert_base), spec, tmp_path / "c", config)


def test_keep_checkpoints_survive_a_resume(corpus: Path, tiny_bert_base: Path, tmp_path: Path) -> None:
    from tests.test_training import _Interrupt, _StopAt

    config = TrainConfig(max_steps=6, save_steps=2, keep_checkpoints=3, **TINY)
    spec = plan_members("100", seed=2)[0]
    with pytest.raises(_Interrupt):
        train_member(corpus, str(tiny_bert_base), spec, tmp_path, config, callbacks=[_StopAt(5)])
    assert sorted(p.name for p in (tmp_path / f".{spec.name}.work" / "keep").iterdir()) == ["step-2", "step-4"]
    member = train_member(corpus, str(tiny_bert_base), spec, tmp_path, config)
    kept = sorted((member / "checkpoints").iterdir(), key=lambda p: int(p.name.split("-")[1]))
    assert [p.name for p in kept] == ["step-2", "step-4", "step-6"]
    final, states = _state(member), [_state(p) for p in kept]
    for key in final:
        torch.testing.assert_close(states[-1][key], final[key], rtol=0, atol=0)
    assert any(not torch.equal(states[0][k], states[1][k]) for k in final)
    for path, step in zip(kept, (2, 4, 6), strict=True):
        record = json.loads((path / MEMBER_FILE).read_text())
        assert record["checkpoint"] == {"step": step, "steps": 6} and record["kind"] == "member"
        assert "training_result" not in record and record["datasets"] == json.loads(
            (member / MEMBER_FILE).read_text())["datasets"]  # fmt: skip
    soup = tmp_path / "soup.yml"
    written = CliRunner().invoke(main, ["recipe", "--checkpoints", str(member), "-o", str(soup), "--method",
                                        "boom_linear"])  # fmt: skip
    assert written.exit_code == 0, written.output
    import yaml

    assert [m["model"] for m in yaml.safe_load(soup.read_text())["models"]] == [str(p) for p in kept]
    merged = CliRunner().invoke(main, ["merge", str(soup), str(tmp_path / "souped")])
    assert merged.exit_code == 0, merged.output
    got = _state(tmp_path / "souped")
    for key in final:
        if final[key].is_floating_point():
            torch.testing.assert_close(got[key], sum(s[key] for s in states) / 3, rtol=1e-5, atol=1e-6, msg=key)
    alone = CliRunner().invoke(main, ["recipe", "--checkpoints", str(tiny_bert_base), "-o", str(tmp_path / "x.yml")])
    assert alone.exit_code == 1 and "no kept checkpoints" in alone.output
