"""Write runnable mergekit recipes for bag members.

Owns: the recipes written for members (BOOM or one of the paper's baselines), their weights
(equal, or by each member's sampling ratio) and checkpoint soups. It never validates a recipe
it did not write (:mod:`boom_merge.merge.recipes` does) and never merges.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml

from boom_merge.errors import BoomError
from boom_merge.lineage import MEMBER_FILE
from boom_merge.merge.recipes import DTYPES, base_policy
from boom_merge.model_refs import check_each_once, check_spec

Method = Literal["boom", "boom_linear", "linear", "multislerp", "task_arithmetic", "ties"]
METHODS: tuple[str, ...] = ("boom", "boom_linear", "linear", "multislerp", "task_arithmetic", "ties")
WeightScheme = Literal["equal", "ratio"]

_FORMULAS = {
    "boom": "Multi-SLERP of the members (of their deltas from base_model when given): "
    "direction = normalise(sum_i w_i t_i/|t_i|), norm = sum_i w_i |t_i|",
    "boom_linear": "weighted average of the members: sum_i w_i t_i / sum_i w_i",
    "linear": "weighted average of the members: sum_i w_i t_i / sum_i w_i (mergekit linear)",
    "multislerp": "mergekit's Multi-SLERP of the members (of their deltas from base_model when given)",
    "task_arithmetic": "base + sum_i w_i (t_i - base); weights sum to 1, so this is the mean task vector",
    "ties": "base + TIES(trim to `density`, elect signs, disjoint mean) of the task vectors t_i - base",
}


def _manifest(member: str | Path) -> Any:
    """A member's ``boom_member.json`` (a dir or Hub id), read by :mod:`boom_merge.lineage`."""
    from boom_merge.lineage import read_member_manifest
    from boom_merge.model_refs import resolve_model

    path = resolve_model(member).path
    manifest = read_member_manifest(path)
    if manifest is None:
        raise BoomError("no member manifest; train it with `boom-merge train` or use --weights equal",
                        path=path / MEMBER_FILE)
    return manifest


def read_manifest(model_dir: str | Path) -> dict[str, Any]:
    """A member's ``boom_member.json`` as a dict."""
    return dict(_manifest(model_dir).data)


def checkpoint_members(members: Sequence[str | Path]) -> list[Path]:
    """The kept checkpoints (``train --keep-checkpoints K``) of each member, in step order: a checkpoint soup."""
    from boom_merge.training.keep import kept_checkpoints

    found = []
    for member in members:
        kept = kept_checkpoints(member)
        if not kept:
            raise BoomError("no kept checkpoints (train it with --keep-checkpoints K)", path=member)
        found.extend(kept)
    return found


def member_weights(members: Sequence[str | Path], scheme: WeightScheme) -> list[float]:
    """Normalised weights: equal, or proportional to each manifest's ``sample_ratio``."""
    if scheme == "equal":
        raw = [1.0] * len(members)
    else:
        raw = []
        for member in members:
            manifest = _manifest(member)
            if manifest.sample_ratio is None:
                raise BoomError("the member manifest has no sample_ratio; use --weights equal", path=manifest.file)
            raw.append(manifest.sample_ratio)
    total = sum(raw)
    return [round(w / total, 6) for w in raw]


def build_recipe(
    members: Sequence[str | Path],
    *,
    method: Method = "boom",
    weights: WeightScheme = "equal",
    base: str | Path | None = None,
    density: float = 0.5,
    dtype: str | None = None,
) -> dict[str, Any]:
    """A mergekit recipe (as a dict) merging ``members`` with ``method``.

    No ``dtype`` is written by default: the merge keeps the inputs' dtype (arithmetic in
    float32); ``dtype`` sets the output's (``out_dtype``).
    """
    if not members:
        raise BoomError("at least one member model is needed")
    if method not in METHODS:
        raise BoomError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    def key(model: str | Path) -> str:  # a local dir by where it is, a Hub id as written
        return str(Path(model).expanduser().resolve()) if Path(model).expanduser().is_dir() else str(model)

    check_each_once([(m, key(m)) for m in members], (base, key(base)) if base is not None else None)
    if method == "ties" and not 0 < density <= 1:
        raise BoomError(f"--density must be in (0, 1] (the share of each task vector kept), got {density}")
    policy = base_policy(method)
    if policy == "required" and base is None:
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
    }
    if dtype is not None:
        if dtype not in DTYPES:
            raise BoomError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
        recipe["out_dtype"] = dtype
    if base is not None and policy != "ignored":  # mergekit's linear would ask for a weight for the base
        recipe["base_model"] = str(base)
    if method in ("boom", "boom_linear"):
        recipe["parameters"] = {"interpolation": "linear" if method == "boom_linear" else "slerp"}
    elif policy == "required":
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
    """Write a runnable recipe to ``out`` atomically; refuse to overwrite without ``force``, or a member or
    base that is neither a local dir nor a Hub id (:func:`boom_merge.model_refs.check_spec`)."""
    from boom_merge.outputs import write_output_file

    for model in [*members, *([base] if base is not None else [])]:
        check_spec(model)

    text = recipe_yaml(
        build_recipe(members, method=method, weights=weights, base=base, **options),
        method=method,
        weights=weights,
    )
    return write_output_file(out, text, inputs=[*members, base], force=force, parents=True)
