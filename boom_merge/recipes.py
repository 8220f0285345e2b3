"""Read mergekit recipes strictly, and write them for bag members.

Owns: strict recipe reading and the recipes written for members. It never reads model weights
and never merges (:mod:`boom_merge.merging` does).

:func:`load_recipe` / :func:`validate_recipe` / :func:`validate_config` are the merge
pipeline's first step (:mod:`boom_merge.merging`, also under plain ``mergekit-yaml``):
unknown keys and method parameters are refused naming the valid ones, weights must be
finite, non-negative, with a positive sum, ``models`` neither empty nor repeating a
model; every error names the recipe file. Nothing here reads model weights.

:func:`write_recipe` turns a list of trained members into a runnable recipe for
``boom-merge merge`` or plain ``mergekit-yaml``: BOOM itself or one of the paper's
baselines. Weights are equal or proportional to each member's sampling ratio (read
from the ``boom_member.json`` manifest the trainer writes).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml

from boom_merge.errors import BoomError
from boom_merge.lineage import MEMBER_FILE

Method = Literal["boom", "boom_linear", "linear", "multislerp", "task_arithmetic", "ties"]
METHODS: tuple[str, ...] = ("boom", "boom_linear", "linear", "multislerp", "task_arithmetic", "ties")
WeightScheme = Literal["equal", "ratio"]
# output dtypes a recipe or merge may ask for (default: the inputs' own dtype)
DTYPES: tuple[str, ...] = ("float32", "bfloat16", "float16", "float64")
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


def _manifest(member: str | Path) -> Any:
    """A member's ``boom_member.json`` (a dir or Hub id), read by :mod:`boom_merge.lineage`."""
    from boom_merge.lineage import read_member_manifest
    from boom_merge.models import resolve_model

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


# ---------------------------------------------------------------- strict reading


def _key_structure() -> dict[type, dict[str, type]]:
    """Which keys hold nested mappings of which mergekit config class (for key checks)."""
    from mergekit.config import (
        InputModelDefinition,
        InputSliceDefinition,
        MergeConfiguration,
        OutputModuleDefinition,
        OutputSliceDefinition,
    )
    from mergekit.tokenizer.config import TokenizerConfig

    models, slices = {"models": InputModelDefinition}, {"slices": OutputSliceDefinition}
    return {
        MergeConfiguration: {**models, **slices, "modules": OutputModuleDefinition, "tokenizer": TokenizerConfig},
        OutputModuleDefinition: {**models, **slices},
        OutputSliceDefinition: {"sources": InputSliceDefinition},
    }


def _check_keys(data: Any, cls: type, where: str, recipe: Path | None, structure: dict[type, dict[str, type]]) -> None:
    if not isinstance(data, dict):
        return
    fields = cls.model_fields
    for key, value in data.items():
        if key not in fields:
            raise BoomError(f"unknown key {key!r} in {where}; valid: {', '.join(fields)}", path=recipe)
        nested = structure.get(cls, {}).get(key)
        if nested is None:
            continue
        if key == "modules" and isinstance(value, dict):
            items = [(f"{where}.modules.{name}", item) for name, item in value.items()]
        elif isinstance(value, list):
            items = [(f"{where}.{key}[{i}]", item) for i, item in enumerate(value)]
        else:
            items = [(f"{where}.{key}", value)]
        for place, item in items:
            _check_keys(item, nested, place, recipe, structure)


def validate_recipe(data: Any, recipe: Path | None = None) -> Any:
    """A strict ``MergeConfiguration`` from a parsed recipe; errors name ``recipe``."""
    from mergekit.config import MergeConfiguration
    from pydantic import ValidationError

    if not isinstance(data, dict):
        raise BoomError("a recipe must be a YAML mapping with merge_method and models", path=recipe)
    structure = _key_structure()
    _check_keys(data, MergeConfiguration, "the recipe", recipe, structure)
    if "models" in data and not data["models"]:
        raise BoomError("models: is empty; list at least one input model", path=recipe)
    try:
        config = MergeConfiguration.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise BoomError(f"invalid recipe: {where}: {first['msg']}", path=recipe) from None
    except (RuntimeError, ValueError, TypeError) as error:  # mergekit's own validators raise these
        raise BoomError(f"invalid recipe: {error}", path=recipe) from None
    validate_config(config, recipe)
    return config


def load_recipe(recipe: str | Path) -> tuple[Any, str]:
    """Read and strictly validate a mergekit YAML recipe; return (configuration, source text)."""
    recipe = Path(recipe)
    try:
        text = recipe.read_text(encoding="utf-8")
        data = yaml.safe_load(text)
    except OSError as error:
        raise BoomError(f"cannot read recipe ({error.strerror or error})", path=recipe) from None
    except UnicodeDecodeError:
        raise BoomError("cannot read recipe (not UTF-8 text)", path=recipe) from None
    except yaml.YAMLError as error:
        raise BoomError(f"invalid YAML ({str(error).splitlines()[0]})", path=recipe) from None
    return validate_recipe(data, recipe), text


def _settings(config: Any) -> Iterator[tuple[str, dict[str, Any], Any]]:
    """(where, parameters, model or None for shared settings) of every parameter block."""
    yield "parameters", config.parameters or {}, None
    for entry in config.models or []:
        yield f"models[{entry.model}].parameters", entry.parameters or {}, entry.model
    for i, output_slice in enumerate(config.slices or []):
        yield f"slices[{i}].parameters", output_slice.parameters or {}, None
        for source in output_slice.sources:
            yield f"slices[{i}].sources[{source.model}].parameters", source.parameters or {}, source.model
    for name, module in (config.modules or {}).items():
        yield f"modules.{name}.parameters", module.parameters or {}, None


def _leaves(value: Any) -> Iterator[Any]:
    """Every scalar of a parameter setting (a scalar, a gradient list, conditional values)."""
    if isinstance(value, (list, tuple)):
        for item in value:
            yield from _leaves(item)
    elif hasattr(value, "value"):  # mergekit's ConditionalParameter
        yield from _leaves(value.value)
    else:
        yield value


def _as_float(number: int | float) -> float:
    try:
        return float(number)
    except OverflowError:  # an integer beyond float64 (YAML reads 1e400 written out as an int)
        return math.inf if number > 0 else -math.inf


def _check_value(method: Any, spec: Any, value: Any, where: str, recipe: Path | None) -> None:
    if value is None:  # unset: the method's default
        return
    scalar = isinstance(value, (int, float, str, bool))
    for leaf in _leaves(value):
        number = not isinstance(leaf, bool) and isinstance(leaf, (int, float))
        if not scalar and not number:  # mergekit interpolates a list as a gradient: numbers only
            raise BoomError(f"{spec.name} in {where} for {method}: a list (gradient) holds numbers only, "
                            f"got {leaf!r}", path=recipe)
        if number and not math.isfinite(_as_float(leaf)):
            raise BoomError(f"{spec.name} in {where} must be finite, got {_as_float(leaf)}", path=recipe)
        if number and spec.name == "weight" and leaf < 0:
            raise BoomError(f"weight in {where} must be non-negative, got {leaf}", path=recipe)
        try:
            spec.validate(leaf)
        except (ValueError, TypeError) as error:
            message = str(error).strip().splitlines()[-1].strip()
            raise BoomError(f"invalid {spec.name}={leaf!r} in {where} for {method}: {message}", path=recipe) from None


def _check_models(config: Any, method: Any, recipe: Path | None) -> None:
    """No model listed twice; something to merge besides the base; weights with a positive sum."""
    entries = [entry.model for entry in config.models or []]
    for model, count in Counter(entries).items():
        if count > 1:
            raise BoomError(f"model {model} is listed {count} times in models:", path=recipe)
    contract = method.spec.contract
    if getattr(contract.base, "value", None) == "required" and config.base_model is None and not config.slices:
        raise BoomError(f"{config.merge_method} needs a base_model (it merges differences from it)", path=recipe)
    if not entries:
        return
    merged = [model for model in entries if model != config.base_model]
    if not merged and contract.min_non_base:
        raise BoomError(f"every model in models: is the base_model {config.base_model}; "
                        f"{config.merge_method} needs at least one other model to merge into it", path=recipe)
    fewest, most = contract.min_non_base or 0, contract.max_non_base
    if not config.slices and (len(merged) < fewest or (most is not None and len(merged) > most)):
        wanted = f"exactly {most}" if fewest == most else f"at least {fewest}" if most is None else f"{fewest} to {most}"
        raise BoomError(f"{config.merge_method} merges {wanted} models besides the base_model; got {len(merged)}",
                        path=recipe)
    specs = {p.name: p for p in method.spec.input_parameters}
    shared = config.parameters or {}
    weights = []
    for entry in config.models:
        own = entry.parameters or {}
        for spec in specs.values():
            if spec.required and spec.name not in own and spec.name not in shared and entry.model != config.base_model:
                raise BoomError(f"models[{entry.model}] needs parameter {spec.name!r} for {config.merge_method}",
                                path=recipe)
        if entry.model != config.base_model and "weight" in specs:
            weights.append(own.get("weight", shared.get("weight", specs["weight"].default)))
    if weights and all(isinstance(w, (int, float)) and not isinstance(w, bool) for w in weights) and sum(weights) <= 0:
        raise BoomError(f"the models' weights sum to {sum(weights)}; they must sum to a positive number", path=recipe)


def validate_config(config: Any, recipe: Path | None = None) -> None:
    """Known method, known and valid parameters, sane weights and model list; errors name ``recipe``."""
    from mergekit.merge_methods import registered_methods

    from boom_merge.mergekit_compat import ensure_applied

    ensure_applied()
    methods = {m.spec.name: m for m in registered_methods()}
    method = methods.get(config.merge_method)
    if method is None:
        raise BoomError(f"unknown merge_method {config.merge_method!r}; valid: {', '.join(sorted(methods))}",
                        path=recipe)
    every = {p.name: p for p in method.spec.parameters}
    per_input = {p.name: p for p in method.spec.input_parameters}
    for where, values, model in _settings(config):
        valid = every if model is None else per_input
        for name, value in values.items():
            if name not in valid:
                raise BoomError(f"unknown parameter {name!r} in {where} for {config.merge_method}; "
                                f"valid: {', '.join(sorted(valid)) or 'none'}", path=recipe)
            _check_value(config.merge_method, valid[name], value, where, recipe)
    _check_models(config, method, recipe)


# ---------------------------------------------------------------- writing recipes for members


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
    }
    if dtype is not None:
        if dtype not in DTYPES:
            raise BoomError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
        recipe["out_dtype"] = dtype
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
    """Write a runnable recipe to ``out`` atomically; refuse to overwrite without ``force``."""
    from boom_merge.outputs import write_output_file

    text = recipe_yaml(
        build_recipe(members, method=method, weights=weights, base=base, **options),
        method=method,
        weights=weights,
    )
    return write_output_file(out, text, inputs=[*members, base], force=force, parents=True)
