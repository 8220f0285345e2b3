"""Read and write mergekit recipes for bag members.

:func:`write_recipe` turns a list of trained members into a runnable recipe for
``boom-merge merge`` or plain ``mergekit-yaml``: BOOM itself or one of the paper's
baselines. Weights are equal or proportional to each member's sampling ratio (read
from the ``boom_member.json`` manifest the trainer writes).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml

from boom_merge.errors import BoomError
from boom_merge.lineage import MEMBER_FILE

Method = Literal["boom", "boom_linear", "linear", "multislerp", "task_arithmetic", "ties"]
METHODS: tuple[str, ...] = ("boom", "boom_linear", "linear", "multislerp", "task_arithmetic", "ties")
WeightScheme = Literal["equal", "ratio"]
_NEEDS_BASE = {"task_arithmetic", "ties"}
_IGNORES_BASE = {"linear"}  # mergekit's linear would ask for a weight for the base

_FORMULAS = {
    "boom": "Multi-SLERP of the members (of their deltas from base_model when given): "
    "direction = normalise(sum_i w_i t_i/|t_i|), norm = sum_i w_i |t_i|",
    "boom_linear": "weighted average of the members: sum_i w_i t_i / sum_i w_i",
    "linear": "weighted average of the members: sum_i w_i t_i / sum_i w_i (mergekit linear)",
    "multislerp": "mergekit's Multi-SLERP of the members (of their deltas from base_model when given)",
    "task_arithmetic": "base + sum_i w_i (t_i - base); weights sum to 1, so this is the mean task vector",
    "ties": "base + TIES(trim to `density`, elect signs, disjoint mean) of the task vectors t_i - base",
}


def ordered_references(config: Any) -> list[Any]:
    """A config's input ``ModelReference``s in recipe order, base last, no repeats.

    mergekit's ``referenced_models()`` returns them in set order, which varies
    between runs; cards, lineage and head merges need a stable order.
    """
    refs = [m.model for m in config.models or []]
    for output_slice in config.slices or []:
        refs.extend(source.model for source in output_slice.sources)
    if config.base_model is not None:
        refs.append(config.base_model)
    return list(dict.fromkeys(refs))


def read_manifest(model_dir: str | Path) -> dict[str, Any]:
    """A member's ``boom_member.json``."""
    path = Path(model_dir) / MEMBER_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BoomError("no member manifest; train it with `boom-merge train` or use --weights equal", path=path) from None
    except (OSError, json.JSONDecodeError) as error:
        raise BoomError(f"unreadable member manifest ({error})", path=path) from None


def member_weights(members: Sequence[str | Path], scheme: WeightScheme) -> list[float]:
    """Normalised weights: equal, or proportional to each manifest's ``sample_ratio``."""
    if scheme == "equal":
        raw = [1.0] * len(members)
    else:
        raw = []
        for member in members:
            ratio = read_manifest(member).get("sample_ratio")
            if not isinstance(ratio, (int, float)) or not 0 < ratio <= 1:
                raise BoomError(f"sample_ratio must be a number in (0, 1], got {ratio!r}", path=Path(member) / MEMBER_FILE)
            raw.append(float(ratio))
    total = sum(raw)
    return [round(w / total, 6) for w in raw]


def build_recipe(
    members: Sequence[str | Path],
    *,
    method: Method = "boom",
    weights: WeightScheme = "equal",
    base: str | Path | None = None,
    density: float = 0.5,
    dtype: str = "float32",
) -> dict[str, Any]:
    """A mergekit recipe (as a dict) merging ``members`` with ``method``."""
    if not members:
        raise BoomError("at least one member model is needed")
    if method not in METHODS:
        raise BoomError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    if method in _NEEDS_BASE and base is None:
        raise BoomError(f"method {method} merges task vectors and needs --base BASE")
    values = member_weights(members, weights)
    models = []
    for member, weight in zip(members, values):
        parameters: dict[str, Any] = {"weight": weight}
        if method == "ties":
            parameters["density"] = density
        models.append({"model": str(member), "parameters": parameters})
    recipe: dict[str, Any] = {
        "merge_method": {"boom_linear": "boom"}.get(method, method),
        "models": models,
        "dtype": dtype,
    }
    if base is not None and method not in _IGNORES_BASE:
        recipe["base_model"] = str(base)
    if method in ("boom", "boom_linear"):
        recipe["parameters"] = {"interpolation": "linear" if method == "boom_linear" else "slerp"}
    elif method in _NEEDS_BASE:
        recipe["parameters"] = {"normalize": False}
    return recipe


def recipe_yaml(recipe: dict[str, Any], *, method: str, weights: str) -> str:
    """Render a recipe with a header saying what it computes."""
    header = (
        f"# Written by `boom-merge recipe` ({method}, {weights} weights).\n"
        f"# {_FORMULAS[method]}\n"
        "# Run: boom-merge merge THIS.yml OUT   (or: mergekit-yaml THIS.yml OUT)\n"
    )
    return header + yaml.safe_dump(recipe, sort_keys=False)


def write_recipe(
    members: Sequence[str | Path],
    out: str | Path,
    *,
    method: Method = "boom",
    weights: WeightScheme = "equal",
    base: str | Path | None = None,
    force: bool = False,
    **options: Any,
) -> Path:
    """Write a runnable recipe to ``out``; refuse to overwrite without ``force``."""
    out = Path(out)
    if out.exists() and not force:
        raise BoomError("recipe already exists; pass --force to replace it", path=out)
    text = recipe_yaml(
        build_recipe(members, method=method, weights=weights, base=base, **options),
        method=method,
        weights=weights,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    return out
