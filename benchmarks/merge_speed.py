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

    python benchmarks/merge_speed.py --workdir /tmp/boom-bench --members 4 8 --repeats 2
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


def build_members(workdir: Path, count: int, layers: int) -> list[Path]:
    """Member i = a shared random BERT-large-size model plus seeded noise (as fine-tuning would)."""
    from safetensors.torch import load_file, save_file
    from transformers import BertConfig, BertModel

    base = workdir / "base"
    if not (base / "model.safetensors").exists():
        config = BertConfig(hidden_size=1024, num_hidden_layers=layers, num_attention_heads=16,
                            intermediate_size=4096)
        BertModel(config).save_pretrained(base)
    members = []
    for i in range(count):
        member = workdir / f"member-{i}"
        members.append(member)
        if (member / "model.safetensors").exists():
            continue
        member.mkdir(parents=True, exist_ok=True)
        state = load_file(str(base / "model.safetensors"))
        generator = torch.Generator().manual_seed(i)
        for name, tensor in state.items():
            if tensor.is_floating_point():
                tensor.add_(torch.randn(tensor.shape, generator=generator) * 0.01)
        save_file(state, str(member / "model.safetensors"), metadata={"format": "pt"})
        (member / "config.json").write_text((base / "config.json").read_text())
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/boom-bench"))
    parser.add_argument("--members", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--layers", type=int, default=24, help="24 = BERT-large (335M parameters)")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    members = build_members(args.workdir, max(args.members), args.layers)
    one_model_gib = (members[0] / "model.safetensors").stat().st_size / 2**30
    results = {}
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
