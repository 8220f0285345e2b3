"""Incremental BOOM updates: fold an update model into an existing model.

The paper's cheap update: train an update model on the new data plus a small sample
of the old (``boom-merge train-update``), then merge it into the existing model with
``boom_incremental``. The existing model is only read; the new model records its
lineage (inputs, weights, content hashes, and the existing model's own lineage).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from boom_merge.errors import BoomError
from boom_merge.lineage import LINEAGE_FILE, incremental_lineage
from boom_merge.merging import DEFAULT_OUT_SHARD_SIZE
from boom_merge.outputs import check_output

_HALF_DTYPES = {"bfloat16", "float16"}


def _config_dtype(model_dir: Path) -> str | None:
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    dtype = config.get("dtype") or config.get("torch_dtype")
    return dtype if dtype in _HALF_DTYPES else None


def incremental_recipe(
    old: Path, update: Path, *, update_weight: float, interpolation: str
) -> dict[str, Any]:
    """The ``boom_incremental`` recipe: existing model as base, update as the one input."""
    recipe: dict[str, Any] = {
        "merge_method": "boom_incremental",
        "base_model": str(old),
        "models": [{"model": str(update)}],
        "parameters": {"update_weight": update_weight, "interpolation": interpolation},
        "dtype": "float32",
    }
    out_dtype = _config_dtype(old)
    if out_dtype:
        recipe["out_dtype"] = out_dtype
    return recipe


@dataclass(frozen=True)
class IncrementalResult:
    path: Path
    lineage: dict[str, Any]


def incremental_merge(
    old: str | Path,
    update: str | Path,
    out: str | Path,
    *,
    update_weight: float = 0.5,
    interpolation: Literal["slerp", "linear"] = "slerp",
    force: bool = False,
    allow_pickle: bool = False,
    cuda: bool = False,
    out_shard_size: str = DEFAULT_OUT_SHARD_SIZE,
) -> IncrementalResult:
    """Merge ``update`` into ``old`` as ``out``; ``old`` is never written to."""
    from mergekit.config import MergeConfiguration

    from boom_merge.merging import run_recipe

    old, update, out = Path(old).absolute(), Path(update).absolute(), Path(out).absolute()
    if not 0.0 <= update_weight <= 1.0:
        raise BoomError(f"--update-weight must be in [0, 1], got {update_weight}")
    for model in (old, update):
        if not model.is_dir():
            raise BoomError("model directory not found", path=model)
    if old.resolve() == update.resolve():
        raise BoomError(f"UPDATE is OLD ({update}): give the update model trained on the new data")
    check_output(out, inputs=(old, update), force=force)  # before hashing: OLD and UPDATE stay untouched
    recipe = incremental_recipe(old, update, update_weight=update_weight, interpolation=interpolation)
    text = "# Written by `boom-merge incremental`.\n" + yaml.safe_dump(recipe, sort_keys=False)
    lineage = incremental_lineage(old, update, update_weight=update_weight, interpolation=interpolation)
    run_recipe(
        MergeConfiguration.model_validate(recipe),
        out,
        recipe_text=text,
        force=force,
        cuda=cuda,
        allow_pickle=allow_pickle,
        out_shard_size=out_shard_size,
        extra_files={LINEAGE_FILE: json.dumps(lineage, indent=2) + "\n"},
    )
    return IncrementalResult(out, lineage)
