"""Real training runs on a tiny BERT sentence-transformer: members, schedules, resume, LoRA, updates.

The training data is real English: first docstring paragraphs of standard-library
functions (name -> description, with sibling functions as hard negatives), module
summaries (question -> summary, with a per-line prompt) and a few hand-written
questions and answers.
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from sentence_transformers import SentenceTransformer
from transformers import TrainerCallback

from boom_merge.cli import main
from boom_merge.data.loading import Example, load_training_data, scan_training_data
from boom_merge.data.sampling import MemberSpec, ids_sha256, plan_members
from boom_merge.errors import BoomError
from boom_merge.lineage import MEMBER_FILE, model_sha256
from boom_merge.training import (
    TrainConfig,
    build_train_dataset,
    train_member,
    train_members,
    train_update,
    training_rows,
)
from boom_merge.training.rows import Part
from boom_merge.training.trainer import load_model, make_trainer

FUNCTION_MODULES = ["math", "string", "os.path", "json", "textwrap", "statistics", "heapq", "bisect", "shutil"]
SUMMARY_MODULES = [
    "abc",
    "argparse",
    "asyncio",
    "base64",
    "bisect",
    "calendar",
    "codecs",
    "collections",
    "colorsys",
    "contextlib",
    "copy",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "enum",
    "fnmatch",
    "fractions",
    "glob",
    "gzip",
    "hashlib",
    "heapq",
    "hmac",
    "inspect",
    "ipaddress",
    "json",
    "locale",
    "logging",
    "lzma",
    "mimetypes",
    "numbers",
    "pathlib",
    "pickle",
    "pprint",
    "queue",
    "secrets",
    "shlex",
    "socket",
    "sqlite3",
    "string",
    "tarfile",
    "tempfile",
    "textwrap",
    "threading",
    "timeit",
    "traceback",
    "typing",
    "uuid",
    "warnings",
    "weakref",
    "zipfile",
]
QA = [
    ("What is the boiling point of water at sea level?", "Water boils at 100 degrees Celsius at sea level."),
    ("Who painted the Mona Lisa?", "The Mona Lisa was painted by Leonardo da Vinci."),
    ("What is the largest planet in the solar system?", "Jupiter is the largest planet in the solar system."),
    ("How many legs does a spider have?", "Spiders have eight legs."),
    ("What gas do plants absorb from the air?", "Plants absorb carbon dioxide and release oxygen."),
    ("What is the capital of Japan?", "Tokyo is the capital of Japan."),
    ("Which organ pumps blood through the body?", "The heart pumps blood through the body."),
    ("What is the chemical symbol for gold?", "The chemical symbol for gold is Au."),
    ("How many continents are there?", "There are seven continents on Earth."),
    ("What language is spoken in Brazil?", "Portuguese is the official language of Brazil."),
    ("Who wrote Pride and Prejudice?", "Pride and Prejudice was written by Jane Austen."),
    ("What is the freezing point of water?", "Water freezes at zero degrees Celsius."),
]
TINY = dict(batch_size=8, group_size=2, learning_rate=2e-3, warmup_ratio=0.0, logging_steps=1)


def _first_paragraph(obj: object) -> str | None:
    doc = inspect.getdoc(obj)
    return " ".join(doc.split("\n\n")[0].split()) if doc else None


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def _function_rows() -> list[dict]:
    rows = []
    for module_name in FUNCTION_MODULES:
        module = importlib.import_module(module_name)
        docs = {}
        for name, obj in sorted(vars(module).items()):
            text = None if name.startswith("_") or not inspect.isroutine(obj) else _first_paragraph(obj)
            if text and len(text) >= 20 and text not in docs.values():
                docs[f"{module_name}.{name}"] = text
        for name, text in docs.items():
            rows.append({"query": name, "pos": [text], "neg": [t for n, t in docs.items() if n != name][:3]})
    return rows


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CORPUS/train/{functions,modules,qa}.jsonl, as the corpora builder lays them out."""
    train = tmp_path_factory.mktemp("corpus") / "train"
    summaries = {m: _first_paragraph(importlib.import_module(m)) for m in SUMMARY_MODULES}
    _write_jsonl(train / "functions.jsonl", _function_rows())
    _write_jsonl(
        train / "modules.jsonl",
        [
            {"query": f"What is the Python module {m} for?", "pos": [s], "prompt": "Answer the question: "}
            for m, s in summaries.items()
            if s and len(s) > 10
        ],
    )
    _write_jsonl(train / "qa.jsonl", [{"query": q, "pos": [a]} for q, a in QA])
    return train


def _state(model_dir: Path | str) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in SentenceTransformer(str(model_dir), device="cpu").state_dict().items()}


def _infonce(model_dir: Path | str, data: dict[str, list[Example]], temperature: float = 0.05) -> float:
    """Mean in-dataset InfoNCE of (prompted query, first positive), computed with numpy."""
    model = SentenceTransformer(str(model_dir), device="cpu")
    losses = []
    for examples in data.values():
        queries = model.encode([(e.prompt or "") + e.query for e in examples], convert_to_numpy=True)
        passages = model.encode([e.pos[0] for e in examples], convert_to_numpy=True)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        passages /= np.linalg.norm(passages, axis=1, keepdims=True)
        logits = queries @ passages.T / temperature
        logits -= logits.max(axis=1, keepdims=True)
        log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        losses.extend(-np.diag(log_softmax))
    return float(np.mean(losses))


@pytest.fixture(scope="module")
def trained(corpus: Path, tiny_bert_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two members (50% and 100%) trained once for the tests below."""
    out = tmp_path_factory.mktemp("members")
    config = TrainConfig(max_steps=30, **TINY)
    train_members(corpus, str(tiny_bert_base), "50,100", out, config, seed=3)
    return out


def test_members_train_and_loss_falls(trained: Path, corpus: Path, tiny_bert_base: Path) -> None:
    data = load_training_data(corpus)
    base_loss = _infonce(tiny_bert_base, data)
    base_state = _state(tiny_bert_base)
    for name in ("member-0-r50", "member-1-r100"):
        member_loss = _infonce(trained / name, data)
        assert member_loss < base_loss - 0.3, (name, base_loss, member_loss)
        state = _state(trained / name)
        assert state.keys() == base_state.keys()
        changed = [k for k in state if not torch.equal(state[k], base_state[k])]
        assert len(changed) > len(state) // 2
    assert sorted(p.name for p in trained.iterdir()) == ["member-0-r50", "member-1-r100"]  # no work dirs left


def test_manifest_is_complete(trained: Path, corpus: Path, tiny_bert_base: Path) -> None:
    manifest = json.loads((trained / "member-0-r50" / MEMBER_FILE).read_text())
    for key in (
        "sample_ratio",
        "base_model",
        "base_model_sha256",
        "seed",
        "member_index",
        "mode",
        "datasets",
        "training_args",
        "schedule",
        "package_versions",
        "kind",
    ):
        assert key in manifest, key
    assert manifest["kind"] == "member" and manifest["mode"] == "without_replacement"
    assert manifest["sample_ratio"] == 0.5 and manifest["member_index"] == 0 and manifest["seed"] == 3
    assert manifest["base_model"] == str(tiny_bert_base.resolve())
    assert manifest["base_model_sha256"] == model_sha256(tiny_bert_base)
    assert manifest["training_args"]["max_steps"] == 30 and manifest["schedule"] == "bls"
    assert manifest["training_result"]["steps"] == 30
    assert {"torch", "transformers", "sentence-transformers", "boom-merge"} <= set(manifest["package_versions"])
    other = json.loads((trained / "member-1-r100" / MEMBER_FILE).read_text())
    assert other["seed"] == 4 and other["sample_ratio"] == 1.0
    for file in sorted(corpus.glob("*.jsonl")):
        lines = len(file.read_text().splitlines())
        entry = manifest["datasets"][file.stem]
        assert entry["available"] == lines
        assert entry["sampled"] == math.floor(0.5 * lines + 0.5)
        full = other["datasets"][file.stem]
        assert full["sampled"] == lines and full["ids_sha256"] == ids_sha256(range(1, lines + 1))
        assert entry["ids_sha256"] != full["ids_sha256"]


def test_rerun_skips_finished_members_and_refuses_changed_settings(
    trained: Path, corpus: Path, tiny_bert_base: Path
) -> None:
    before = (trained / "member-0-r50" / "model.safetensors").stat().st_mtime_ns
    train_members(corpus, str(tiny_bert_base), "50,100", trained, TrainConfig(max_steps=30, **TINY), seed=3, member=0)
    assert (trained / "member-0-r50" / "model.safetensors").stat().st_mtime_ns == before
    with pytest.raises(BoomError, match="different settings; pass --force"):
        train_members(
            corpus, str(tiny_bert_base), "50,100", trained, TrainConfig(max_steps=31, **TINY), seed=3, member=0
        )
    with pytest.raises(BoomError, match="out of range"):
        train_members(corpus, str(tiny_bert_base), "50,100", trained, TrainConfig(**TINY), member=2)


def test_a_base_at_another_path_is_the_same_base_when_its_bytes_are(
    trained: Path, corpus: Path, tiny_bert_base: Path, tmp_path: Path
) -> None:
    """A moved run dir or another node's mount: the finished member is kept (by the base's hash);
    a different base at that path is still refused."""
    import shutil

    from tests.tiny_models import make_tiny_bert_st

    moved = tmp_path / "elsewhere" / "base"
    shutil.copytree(tiny_bert_base, moved)
    before = (trained / "member-0-r50" / "model.safetensors").stat().st_mtime_ns
    config = TrainConfig(max_steps=30, **TINY)
    train_members(corpus, str(moved), "50,100", trained, config, seed=3, member=0)
    assert (trained / "member-0-r50" / "model.safetensors").stat().st_mtime_ns == before
    other = make_tiny_bert_st(tmp_path / "other" / "base", seed=1)
    with pytest.raises(BoomError, match="different settings; pass --force"):
        train_members(corpus, str(other), "50,100", trained, config, seed=3, member=0)


def _batches(trainer) -> list[list[dict[str, str]]]:
    """The rows of every training batch, read back through the trainer's dataloader."""
    loader = trainer.get_train_dataloader()
    return [[loader.dataset[i] for i in batch] for batch in loader.batch_sampler]


def _schedule_batches(
    datasets, base: Path, tmp_path: Path, schedule: str, group_size: int
) -> list[list[dict[str, str]]]:
    config = TrainConfig(schedule=schedule, **{**TINY, "group_size": group_size})
    part = Part(datasets, {n: list(range(len(d.examples))) for n, d in datasets.items()})
    dataset = build_train_dataset([part], [""], config, seed=0)
    return _batches(make_trainer(load_model(str(base), config), dataset, config, tmp_path, 0, []))


@pytest.mark.parametrize("schedule", ["bls", "sequential", "mixed"])
def test_schedules_through_the_trainer(corpus: Path, tiny_bert_base: Path, tmp_path: Path, schedule: str) -> None:
    datasets = scan_training_data(corpus)
    where = {(e.prompt or "") + e.query: name for name, d in datasets.items() for e in d.examples}
    # with random negatives, NO_DUPLICATES may hold back a few rows at the end of a pass
    for batch in _schedule_batches(datasets, tiny_bert_base, tmp_path, schedule, group_size=3):
        texts = [text for row in batch for text in row.values()]
        assert len(texts) == len(set(texts))  # no text twice within a batch
    names = [
        [where[row["anchor"]] for row in batch]
        for batch in _schedule_batches(datasets, tiny_bert_base, tmp_path, schedule, group_size=1)
    ]
    assert sorted(n for batch in names for n in batch) == sorted(where.values())  # every example once
    pure = [len(set(batch)) == 1 for batch in names]
    order = [batch[0] for batch in names]
    switches = sum(a != b for a, b in zip(order, order[1:], strict=False))
    if schedule == "mixed":
        assert not all(pure)
    else:
        assert all(pure)
        if schedule == "sequential":
            assert order == sorted(order) and switches == len(datasets) - 1
        else:  # bls: batches of all datasets shuffled together
            assert switches > len(datasets)


def test_training_rows_prompts_and_negatives() -> None:
    examples = [
        Example(id=1, query="q1", pos=("p1",), neg=("n1",), prompt="Query: "),
        Example(id=2, query="q2", pos=("p2a", "p2b"), neg=("n2a", "n2b", "n2c")),
        Example(id=3, query="q3", pos=("p3",)),
    ]
    rows = training_rows(examples, [0, 1, 2, 2], TrainConfig(group_size=3, query_prompt="Default: "), seed=0)
    assert rows["anchor"] == ["Query: q1", "Default: q2", "Default: q3", "Default: q3"]
    assert rows["positive"][0] == "p1" and rows["positive"][1] in ("p2a", "p2b")
    for i, example in enumerate([examples[0], examples[1], examples[2], examples[2]]):
        negatives = {rows["negative_1"][i], rows["negative_2"][i]}
        assert len(negatives) == 2 and not negatives & set(example.pos)
        if len(example.neg) >= 2:
            assert negatives <= set(example.neg)
    # q1 has one hard negative: the second comes from another query's positives
    assert rows["negative_1"][0] == "n1" and rows["negative_2"][0] in ("p2a", "p2b", "p3")
    with pytest.raises(BoomError, match=r"^defs.jsonl: dataset 'defs': query 'q' has too few hard negatives .* "
                                        r"\(it holds 1 example\); lower --group-size"):
        training_rows([Example(id=1, query="q", pos=("p",))], [0], TrainConfig(group_size=2), seed=0,
                      dataset="defs", source="defs.jsonl")


class _Interrupt(Exception):
    pass


class _StopAt(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise _Interrupt


def test_resume_after_interruption_matches_uninterrupted(corpus: Path, tiny_bert_base: Path, tmp_path: Path) -> None:
    config = TrainConfig(max_steps=8, save_steps=3, **TINY)
    spec = plan_members("60", seed=5)[0]
    with pytest.raises(_Interrupt):
        train_member(corpus, str(tiny_bert_base), spec, tmp_path / "a", config, callbacks=[_StopAt(5)])
    work = tmp_path / "a" / ".member-0-r60.work"
    assert not (tmp_path / "a" / spec.name).exists()
    assert sorted(p.name for p in (work / "checkpoints").iterdir()) == ["checkpoint-3"]
    resumed = train_member(corpus, str(tiny_bert_base), spec, tmp_path / "a", config)
    manifest = json.loads((resumed / MEMBER_FILE).read_text())
    assert manifest["training_result"]["resumed_from"] == "checkpoint-3" and manifest["training_result"]["steps"] == 8
    assert not work.exists()
    straight = train_member(corpus, str(tiny_bert_base), spec, tmp_path / "b", config)
    a, b, base = _state(resumed), _state(straight), _state(tiny_bert_base)
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4)
    assert any(not torch.equal(a[k], base[k]) for k in a)


def test_checkpoints_of_another_run_are_refused(corpus: Path, tiny_bert_base: Path, tmp_path: Path) -> None:
    spec = MemberSpec(index=0, ratio=0.5, seed=1, sample_seed=1, mode="bootstrap")
    with pytest.raises(_Interrupt):
        train_member(
            corpus,
            str(tiny_bert_base),
            spec,
            tmp_path,
            TrainConfig(max_steps=4, save_steps=1, **TINY),
            callbacks=[_StopAt(2)],
        )
    with pytest.raises(BoomError, match="checkpoints of a different run"):
        train_member(corpus, str(tiny_bert_base), spec, tmp_path, TrainConfig(max_steps=5, save_steps=1, **TINY))
    path = train_member(
        corpus, str(tiny_bert_base), spec, tmp_path, TrainConfig(max_steps=5, save_steps=1, **TINY), force=True
    )
    manifest = json.loads((path / MEMBER_FILE).read_text())
    assert manifest["mode"] == "bootstrap" and manifest["training_result"]["resumed_from"] is None


def test_lora_resumes_and_is_merged_into_full_weights(corpus: Path, tiny_bert_base: Path, tmp_path: Path) -> None:
    config = TrainConfig(max_steps=8, save_steps=3, lora=True, lora_rank=4, lora_alpha=8, **TINY)
    spec = plan_members("100", seed=0)[0]
    with pytest.raises(_Interrupt):
        train_member(corpus, str(tiny_bert_base), spec, tmp_path / "a", config, callbacks=[_StopAt(4)])
    path = train_member(corpus, str(tiny_bert_base), spec, tmp_path / "a", config)
    assert json.loads((path / MEMBER_FILE).read_text())["training_result"]["resumed_from"] == "checkpoint-3"
    straight = _state(train_member(corpus, str(tiny_bert_base), spec, tmp_path / "b", config))
    assert not (path / "adapter_config.json").exists()
    state, base = _state(path), _state(tiny_bert_base)
    assert state.keys() == base.keys()
    for key in state:
        torch.testing.assert_close(state[key], straight[key], atol=1e-5, rtol=1e-4)
    changed = {k for k in state if not torch.equal(state[k], base[k])}
    # peft's default LoRA targets for BERT are the attention query and value projections
    assert changed and all(k.endswith(("query.weight", "value.weight")) for k in changed)
    assert sum(k.endswith("query.weight") for k in changed) == 2  # both layers


def test_train_update_cli(corpus: Path, tiny_bert_base: Path, tmp_path: Path) -> None:
    new = tmp_path / "new"
    _write_jsonl(new / "qa.jsonl", [{"query": q.replace("?", " exactly?"), "pos": [a]} for q, a in QA])
    out = tmp_path / "update"
    args = [
        "train-update",
        "--base",
        str(tiny_bert_base),
        "--new-data",
        str(new),
        "--history-data",
        str(corpus),
        "--history-ratio",
        "0.3",
        "--out",
        str(out),
        "--batch-size",
        "8",
        "--max-steps",
        "6",
        "--lr",
        "1e-3",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / MEMBER_FILE).read_text())
    assert manifest["kind"] == "update" and manifest["init"] == "base"
    assert manifest["init_model_sha256"] == manifest["base_model_sha256"] == model_sha256(tiny_bert_base)
    assert manifest["new_data"]["datasets"]["qa"]["sampled"] == len(QA)
    assert manifest["history"]["history_ratio"] == 0.3
    for file in corpus.glob("*.jsonl"):
        lines = len(file.read_text().splitlines())
        assert manifest["history"]["datasets"][file.stem]["sampled"] == math.floor(0.3 * lines + 0.5)
    assert set(manifest["datasets"]) == {"new/qa"} | {f"history/{f.stem}" for f in corpus.glob("*.jsonl")}
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 1 and "already exists; pass --force" in again.output
    bad = CliRunner().invoke(main, args[:-6] + ["--out", str(tmp_path / "u2"), "--init", "existing"])
    assert bad.exit_code == 1 and "--init existing needs --existing" in bad.output



def test_update_on_its_own_history_is_warned_about(corpus: Path, tiny_bert_base: Path, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """The same data as new data and history (however spelled) trains on it twice: said, not refused."""
    same = f"{corpus}/../{corpus.name}"
    with caplog.at_level("WARNING"):
        train_update(str(tiny_bert_base), corpus, same, 0.5, tmp_path / "u", TrainConfig(max_steps=1, **TINY))
    assert f"{same}: --history-data is --new-data: the update trains on the new data twice" in caplog.text


def test_update_from_existing_model(corpus: Path, tiny_bert_base: Path, trained: Path, tmp_path: Path) -> None:
    existing = trained / "member-1-r100"
    new = tmp_path / "new"
    shutil.copytree(corpus, new)  # the same texts under another name: new data is not the history's path
    path = train_update(
        str(tiny_bert_base),
        new,
        corpus,
        0.5,
        tmp_path / "u",
        TrainConfig(max_steps=3, **TINY),
        init="existing",
        existing=str(existing),
    )
    manifest = json.loads((path / MEMBER_FILE).read_text())
    assert manifest["init"] == "existing" and manifest["init_model_sha256"] == model_sha256(existing)
    assert manifest["base_model_sha256"] == model_sha256(tiny_bert_base)


def test_cli_train_one_member_and_config_errors(corpus: Path, tiny_bert_base: Path, tmp_path: Path) -> None:
    common = ["train", "--data", str(corpus), "--base", str(tiny_bert_base), "--out", str(tmp_path), "--ratios", "50,R"]
    result = CliRunner().invoke(
        main, common + ["--member", "1", "--batch-size", "4", "--max-steps", "2", "--query-prompt", "Q: "]
    )
    assert result.exit_code == 0, result.output
    assert [p.name for p in tmp_path.iterdir()] == ["member-1-r50"]
    manifest = json.loads((tmp_path / "member-1-r50" / MEMBER_FILE).read_text())
    assert manifest["mode"] == "complement" and manifest["complement_part"] == 1
    assert SentenceTransformer(str(tmp_path / "member-1-r50"), device="cpu").prompts["query"] == "Q: "
    bad = CliRunner().invoke(main, common + ["--batch-size", "1", "--temperature", "0"])
    assert bad.exit_code == 1
    expected = "batch size must be at least 2 (in-batch negatives); temperature must be positive"
    assert bad.output.strip() == f"Error: invalid training configuration: {expected}"
    cpu_fp16 = CliRunner().invoke(main, common + ["--precision", "fp16", "--member", "0"])
    if not torch.cuda.is_available():
        assert cpu_fp16.exit_code == 1 and "needs a CUDA GPU" in cpu_fp16.output


def test_same_command_under_torchrun(corpus: Path, tiny_bert_base: Path, tmp_path: Path) -> None:
    """Two CPU processes (gloo) through torchrun: data parallel, one output written once."""
    import os
    import shutil
    import subprocess
    import sys

    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "HF_HUB_OFFLINE": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--no-python",
        "--nproc_per_node",
        "2",
        shutil.which("boom-merge"),
        "train",
        "--data",
        str(corpus),
        "--base",
        str(tiny_bert_base),
        "--ratios",
        "50",
        "--out",
        str(tmp_path),
        "--batch-size",
        "4",
        "--max-steps",
        "3",
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [p.name for p in tmp_path.iterdir()] == ["member-0-r50"]
    manifest = json.loads((tmp_path / "member-0-r50" / MEMBER_FILE).read_text())
    assert manifest["training_result"]["processes"] == 2
    assert manifest["training_result"]["examples_seen"] == 3 * 4 * 2
    state, base = _state(tmp_path / "member-0-r50"), _state(tiny_bert_base)
    assert any(not torch.equal(state[k], base[k]) for k in state)


def test_incomplete_checkpoint_is_not_resumed_from(tmp_path) -> None:
    from boom_merge.training.runner import _last_complete_checkpoint

    for step, complete in ((5, True), (10, True), (15, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if complete:
            (folder / "trainer_state.json").write_text("{}")
    assert _last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-10")
    assert _last_complete_checkpoint(tmp_path / "missing") is None


def test_sequential_sampler_class_pickles() -> None:
    import pickle

    from boom_merge.training.samplers import SequentialDatasetBatchSampler as cls

    assert pickle.loads(pickle.dumps(cls)) is cls


class _Anchors(TrainerCallback):
    """The anchors of every row the trainer was given, read from its dataloader as training begins."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
        self.seen = [row["anchor"] for row in train_dataloader.dataset]


BASE_PROMPT = "Instruct: Given a question, find the passage that answers it\nQuery: "


def test_a_base_query_prompt_is_trained_with_and_kept(corpus: Path, tmp_path: Path) -> None:
    """A base made with ``boom-merge base --query-prompt`` stores its prompt, which evaluation uses: members
    train their queries with it unless the options name a prompt (``--query-prompt``, ``--instruction``)."""
    from tests.tiny_models import make_tiny_bert_st

    base = make_tiny_bert_st(tmp_path / "base", prompts={"query": BASE_PROMPT, "document": ""})
    own = {e.query: e.prompt for d in scan_training_data(corpus).values() for e in d.examples}

    def train(config: TrainConfig, out: Path, update: bool = False) -> tuple[list[str], dict, dict]:
        seen = _Anchors()
        if update:
            new = out.parent / f"{out.name}-new"
            shutil.copytree(corpus, new)
            member = train_update(str(base), new, corpus, 0.5, out, config, callbacks=[seen])
        else:
            member = train_member(corpus, str(base), plan_members("100", seed=1)[0], out, config, callbacks=[seen])
        manifest = json.loads((member / MEMBER_FILE).read_text())
        return seen.seen, manifest["training_args"], SentenceTransformer(str(member), device="cpu").prompts

    anchors, args, prompts = train(TrainConfig(max_steps=1, **TINY), tmp_path / "m")
    assert len(anchors) == len(own)
    for anchor in anchors:  # an example's own prompt wins; every other query has the base's
        assert any(anchor == (prompt or BASE_PROMPT) + query for query, prompt in own.items()), anchor
    assert sum(anchor.startswith(BASE_PROMPT) for anchor in anchors) > len(anchors) // 2
    assert args["query_prompt"] == prompts["query"] == BASE_PROMPT

    anchors, args, _ = train(TrainConfig(max_steps=1, **TINY), tmp_path / "u", update=True)
    assert any(anchor.startswith(BASE_PROMPT) for anchor in anchors) and args["query_prompt"] == BASE_PROMPT

    config = TrainConfig(max_steps=1, query_prompt="Q: ", instructions={"qa": "answer it"}, **TINY)
    anchors, args, prompts = train(config, tmp_path / "explicit")
    qa = {q for q, _ in QA}
    assert not any(anchor.startswith(BASE_PROMPT) for anchor in anchors)
    assert {a for a in anchors if a.startswith("Instruct: answer it\nQuery: ")} == {
        f"Instruct: answer it\nQuery: {q}" for q in qa
    }
    assert args["query_prompt"] == prompts["query"] == "Q: " and prompts["qa"] == "Instruct: answer it\nQuery: "
