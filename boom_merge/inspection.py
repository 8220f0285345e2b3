"""How diverse are the bag members? Pairwise cosine similarity of their weight deltas.

Owns: the members' pairwise delta similarity and its plot. It never writes anything but the
optional plot.

Bagging only helps if members differ. For each pair of members we compute the
cosine between their deltas (from ``base`` when given, else from the members' mean),
per layer and over the whole model, streaming one tensor name at a time. Models are dirs
or Hub ids (:func:`boom_merge.model_refs.resolve_model`), checked as every reader checks them
(config, tokenizer, honest headers); NaN/Inf is caught on the tensors as they stream.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from boom_merge.merge.checks import ModelFiles, check_same_tensors, model_files
from boom_merge.errors import BoomError
from boom_merge.model_refs import check_device, check_model, resolve_model, transformer_dir

logger = logging.getLogger(__name__)

_LAYER = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)\.")
OVERALL = "overall"
_DTYPE = {"mps": torch.float32}
"""Accumulation dtype where float64 is missing (default float64)."""


def layer_of(tensor_name: str) -> str:
    """Group tensors by transformer layer (``layer 3``), else by their first name part."""
    match = _LAYER.search(tensor_name)
    if match:
        return f"layer {int(match.group(1)):02d}"
    parts = tensor_name.split(".")
    return parts[1] if parts[0] in ("model", "bert", "roberta") and len(parts) > 2 else parts[0]


@dataclass
class SimilarityReport:
    """Pairwise cosine matrices (M x M) per layer group and overall."""

    models: list[str]
    origin: str
    cosine: dict[str, torch.Tensor] = field(default_factory=dict)

    def table(self) -> str:
        """A plain-text table: one row per layer group, one column per member pair."""
        pairs = [(i, j) for i in range(len(self.models)) for j in range(i + 1, len(self.models))]
        header = ["group"] + [f"{i}~{j}" for i, j in pairs] + ["mean"]
        rows = [header]
        for group, matrix in self.cosine.items():
            values = [float(matrix[i, j]) for i, j in pairs]
            mean = sum(values) / len(values) if values else float("nan")
            rows.append([group] + [f"{v:.4f}" for v in values] + [f"{mean:.4f}"])
        widths = [max(len(row[c]) for row in rows) for c in range(len(header))]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in rows]
        legend = [f"[{i}] {name}" for i, name in enumerate(self.models)]
        return "\n".join(legend + [f"deltas from: {self.origin}", ""] + lines)

    def plot(self, path: str | Path) -> Path:
        """Heatmap of the overall matrix beside the per-layer mean pairwise similarity."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from boom_merge.outputs import check_output_file

        path = check_output_file(path, inputs=[*self.models, self.origin], parents=True)  # never inside a model
        overall = self.cosine[OVERALL].numpy()
        m = len(self.models)
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5), gridspec_kw={"width_ratios": [1, 1.4]})
        image = left.imshow(overall, vmin=min(0.0, float(overall.min())), vmax=1.0, cmap="viridis")
        for i in range(m):
            for j in range(m):
                colour = "black" if overall[i, j] > 0.6 else "white"
                left.text(j, i, f"{overall[i, j]:.2f}", ha="center", va="center", color=colour, fontsize=8)
        left.set_xticks(range(m), [str(i) for i in range(m)])
        left.set_yticks(range(m), [f"[{i}] {Path(n).name[:18]}" for i, n in enumerate(self.models)])
        left.set_title(f"overall cosine of deltas\n(from {Path(self.origin).name or self.origin})")
        fig.colorbar(image, ax=left, fraction=0.046)
        groups = [g for g in self.cosine if g != OVERALL]
        upper = torch.triu_indices(m, m, offset=1)
        means = [float(self.cosine[g][upper[0], upper[1]].mean()) for g in groups]
        right.barh(groups, means, color="tab:blue")
        right.set_xlim(min(0.0, *means) - 0.05, 1.0)  # the same scale as the heatmap
        right.axvline(0.0, color="grey", linewidth=0.8)
        right.invert_yaxis()
        right.set_xlabel("mean pairwise cosine")
        right.set_title("per layer group")
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path


def _load(files: ModelFiles, name: str, device: str) -> torch.Tensor:
    """One tensor as float64 on ``device``; NaN/Inf refused naming the file and tensor."""
    from safetensors import safe_open

    file = files.tensors[name].file
    with safe_open(str(file), framework="pt") as handle:
        tensor = handle.get_tensor(name).to(device=device, dtype=_DTYPE.get(torch.device(device).type, torch.float64))
    tensor = tensor.flatten()
    if not bool(torch.isfinite(tensor).all()):
        raise BoomError(f"tensor {name!r} contains NaN or Inf values", path=file)
    return tensor


def _files(spec: str | Path) -> ModelFiles:
    """The weights of a checked model dir or Hub id (finiteness is checked while streaming)."""
    path = resolve_model(spec).path
    check_model(path, finite=False)
    return model_files(transformer_dir(path))


def member_similarity(
    models: list[str | Path], base: str | Path | None = None, *, device: str | None = None,
    plot: str | Path | None = None,
) -> SimilarityReport:
    """Pairwise cosine of member deltas, per layer group and overall (math on ``device``); with ``plot``,
    its heatmap is written there (the path checked before any work)."""
    if len(models) < 2:
        raise BoomError("inspect needs at least two models to compare")
    device = check_device(device)
    members = [_files(m) for m in models]
    base_files = _files(base) if base is not None else None
    if plot is not None:
        from boom_merge.outputs import check_output_file

        check_output_file(plot, inputs=[*models, base], parents=True)
    if len(models) == 2 and base is None:
        logger.warning("two models and no --base: each one's delta from their mean is the other's negated, so every "
                       "cosine is -1; pass --base to compare what each learnt")
    compared = check_same_tensors(members + ([base_files] if base_files else []))
    m = len(members)
    grams: dict[str, torch.Tensor] = {}
    names = [n for n in compared if members[0].tensors[n].dtype.startswith(("F", "BF"))]
    for name in tqdm(names, desc="comparing members", unit="tensor"):
        stacked = torch.stack([_load(files, name, device) for files in members])
        origin = _load(base_files, name, device) if base_files else stacked.mean(0)
        deltas = stacked - origin
        gram = (deltas @ deltas.T).cpu()
        for group in (layer_of(name), OVERALL):
            grams[group] = grams.get(group, torch.zeros(m, m, dtype=torch.float64)) + gram
    report = SimilarityReport(
        [str(p) for p in models], str(base) if base is not None else "the members' mean"
    )
    for group in sorted(grams, key=lambda g: (g == OVERALL, g)):
        gram = grams[group]
        norms = gram.diagonal().sqrt().clamp_min(1e-30)
        report.cosine[group] = gram / norms[:, None] / norms[None, :]
    if plot is not None:
        report.plot(plot)
    return report
