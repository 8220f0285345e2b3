"""Peak memory of a streaming mergekit merge vs an eager (all members in memory) merge.

Writes ``--copies`` randomly initialised Llama-style models of about ``--params``
parameters (bf16 safetensors, sharded, written shard by shard so that building them
needs little memory), then in fresh processes measures peak RSS of

* ``mergekit-yaml`` merging them (lazy loader: tensor by tensor), and
* an eager merge that loads every copy fully, averages and saves (the baseline),
* plus a process that only imports torch and mergekit (the floor).

Run by hand (takes minutes and several GB of disk), e.g.::

    python benchmarks/merge_memory.py --params 1.1e9 --copies 3 --workdir /tmp/merge-mem

and read the printed table (also saved as ``WORKDIR/results.json``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

GIB = 1024**3
SHARD_BYTES = 1 * GIB


def llama_config(params: float) -> dict:
    """A Llama config with about ``params`` parameters (TinyLlama's widths, layers scaled)."""
    hidden, intermediate, vocab = 2048, 5632, 32000
    per_layer = 4 * hidden * hidden + 3 * hidden * intermediate + 2 * hidden
    layers = max(1, round((params - 2 * vocab * hidden) / per_layer))
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "vocab_size": vocab,
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
    }


def write_random_model(path: Path, config: dict, seed: int) -> int:
    """Write a random bf16 model in ~1 GiB shards, one tensor at a time; return its size in bytes."""
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    with torch.device("meta"):
        shapes = {name: p.shape for name, p in LlamaForCausalLM(LlamaConfig(**config)).state_dict().items()}
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config, indent=2))
    generator = torch.Generator().manual_seed(seed)
    weight_map: dict[str, str] = {}
    shard: dict[str, torch.Tensor] = {}
    shard_bytes, index, total = 0, 1, 0
    for name, shape in shapes.items():
        tensor = (torch.randn(shape, generator=generator) * 0.02).to(torch.bfloat16)
        if shard and shard_bytes + tensor.nbytes > SHARD_BYTES:
            save_file(shard, str(path / f"model-{index:05d}.safetensors"))
            shard, shard_bytes, index = {}, 0, index + 1
        shard[name] = tensor
        shard_bytes += tensor.nbytes
        total += tensor.nbytes
        weight_map[name] = f"model-{index:05d}.safetensors"
    save_file(shard, str(path / f"model-{index:05d}.safetensors"))
    index_json = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (path / "model.safetensors.index.json").write_text(json.dumps(index_json, indent=2))
    return total


def _existing_size(path: Path, config: dict) -> int | None:
    """Size of a model written by an earlier run with the same config (reused), else None."""
    index = path / "model.safetensors.index.json"
    if index.is_file() and json.loads((path / "config.json").read_text()) == config:
        return json.loads(index.read_text())["metadata"]["total_size"]
    return None


def eager_merge(models: list[Path], out: Path) -> None:
    """Baseline: load every model completely, average, save (what a naive script does)."""
    import torch
    from safetensors.torch import load_file, save_file

    states = [{k: v for f in sorted(m.glob("*.safetensors")) for k, v in load_file(str(f)).items()} for m in models]
    merged = {k: (sum(s[k].float() for s in states) / len(states)).to(torch.bfloat16) for k in states[0]}
    out.mkdir(parents=True, exist_ok=True)
    save_file(merged, str(out / "model.safetensors"))


def peak_memory(command: list[str], interval: float = 0.05, limit_gib: float | None = None) -> dict[str, float]:
    """Peak memory (GiB) of ``command`` and its children, polled from /proc, and wall seconds.

    ``rss`` counts file-backed pages of memory-mapped safetensors (page cache the kernel
    can drop); ``anon`` is the memory the process really holds (RssAnon). A command whose
    anonymous memory passes ``limit_gib`` is killed (SystemExit: out of memory).
    """
    import psutil

    start = time.time()
    process = psutil.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = {"rss": 0.0, "anon": 0.0}
    while process.poll() is None:
        totals = {"rss": 0, "anon": 0}
        for proc in [process, *process.children(recursive=True)]:
            try:
                status = dict(line.split(":", 1) for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines())
            except (FileNotFoundError, ProcessLookupError, ValueError):
                continue
            totals["rss"] += int(status.get("VmRSS", "0 kB").split()[0])
            totals["anon"] += int(status.get("RssAnon", "0 kB").split()[0])
        peak = {key: max(peak[key], totals[key] / 1024**2) for key in peak}
        if limit_gib is not None and peak["anon"] > limit_gib:
            for proc in [*process.children(recursive=True), process]:
                proc.kill()
            process.wait()
            raise SystemExit(f"out of memory: anonymous memory passed {limit_gib} GiB after {time.time() - start:.0f} s")
        time.sleep(interval)
    if process.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{process.stderr.read().decode()[-2000:]}")
    return {**peak, "seconds": time.time() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=float, default=1.1e9)
    parser.add_argument("--copies", type=int, default=3)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--method", default="linear", help="mergekit merge method (weights 1/copies)")
    parser.add_argument("--out-shard-sizes", nargs="+", default=["5B", "250M"],
                        help="mergekit --out-shard-size values to measure (5B is mergekit's default)")
    parser.add_argument("--skip-eager", action="store_true", help="skip the eager baseline (needs copies x size RAM)")
    parser.add_argument("--eager-only", nargs="+", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.eager_only:
        eager_merge(args.eager_only[:-1], args.eager_only[-1])
        return

    config = llama_config(args.params)
    models = [args.workdir / f"copy{i}" for i in range(args.copies)]
    start = time.time()
    sizes = [_existing_size(m, config) or write_random_model(m, config, seed=i) for i, m in enumerate(models)]
    print(f"{args.copies} models of {sizes[0] / GIB:.2f} GiB ready in {time.time() - start:.0f} s", flush=True)

    recipe = args.workdir / "recipe.yml"
    recipe.write_text(
        f"merge_method: {args.method}\ndtype: bfloat16\nmodels:\n"
        + "".join(f"  - model: {m}\n    parameters:\n      weight: {1 / args.copies}\n" for m in models)
    )
    out = args.workdir / "merged"
    shutil.rmtree(out, ignore_errors=True)
    runs = {
        "import_floor": [sys.executable, "-c", "import torch, mergekit.merge"],
        **{
            f"mergekit_shard_{size}": [shutil.which("mergekit-yaml") or "mergekit-yaml", str(recipe), str(out / size),
                                       "--lazy-unpickle", "--quiet", "--out-shard-size", size]
            for size in args.out_shard_sizes
        },
    }
    if not args.skip_eager:
        shutil.rmtree(args.workdir / "eager", ignore_errors=True)
        runs["eager"] = [sys.executable, __file__, "--workdir", str(args.workdir), "--eager-only",
                         *map(str, models), str(args.workdir / "eager")]  # fmt: skip
    results = {
        "params": sizes[0] / 2,
        "layers": config["num_hidden_layers"],
        "copies": args.copies,
        "model_gib": sizes[0] / GIB,
        **{name: peak_memory(command) for name, command in runs.items()},
    }
    (args.workdir / "results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    for name in runs:
        run = results[name]
        print(f"{name:>12}: peak anon {run['anon']:.2f} GiB ({run['anon'] / results['model_gib']:.2f} x model), "
              f"peak RSS incl. mmapped files {run['rss']:.2f} GiB, {run['seconds']:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
