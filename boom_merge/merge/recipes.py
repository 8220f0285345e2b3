"""Read mergekit recipes strictly.

Owns: strict recipe reading and validation (the merge pipeline's first step) and the output
dtypes a recipe may ask for. It never reads model weights, never writes a recipe
(:mod:`boom_merge.merge.recipe_writing` does) and never merges (:mod:`boom_merge.merge.pipeline` does).

:func:`load_recipe` / :func:`validate_recipe` / :func:`validate_config` are the merge
pipeline's first step (:mod:`boom_merge.merge.pipeline`, also under plain ``mergekit-yaml``):
unknown keys and method parameters are refused naming the valid ones, weights must be
finite, non-negative, with a positive sum, ``models`` neither empty nor repeating a
model; every error names the recipe file. Nothing here reads model weights.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from boom_merge.errors import BoomError

# output dtypes a recipe or merge may ask for (default: the inputs' own dtype)
DTYPES: tuple[str, ...] = ("float32", "bfloat16", "float16", "float64")

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
            problems = getattr(error, "errors", None)  # pydantic's ValidationError: its first problem, not its links
            message = problems()[0]["msg"] if callable(problems) else str(error).strip().splitlines()[0].strip()
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


def _registered() -> dict[str, Any]:
    """mergekit's merge methods by name, BOOM's included."""
    from mergekit.merge_methods import registered_methods

    from boom_merge.merge.methods import register_methods

    register_methods()
    return {m.spec.name: m for m in registered_methods()}


def base_policy(method: str) -> str:
    """``required``, ``optional`` or ``ignored``: what ``method`` does with a base model (its mergekit contract)."""
    return _registered()[{"boom_linear": "boom"}.get(method, method)].spec.contract.base.value


def validate_config(config: Any, recipe: Path | None = None) -> None:
    """Known method, known and valid parameters, sane weights and model list; errors name ``recipe``."""
    methods = _registered()
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
    _check_dtypes(config, recipe)
    if config.merge_method == "boom" and not config.slices:
        _check_boom_scale(config, recipe)


def _check_dtypes(config: Any, recipe: Path | None) -> None:
    """``dtype`` / ``out_dtype`` as mergekit parses them (it refuses others only midway through a merge)."""
    from mergekit.common import dtype_from_name

    for key in ("dtype", "out_dtype"):
        value = getattr(config, key, None)
        try:
            dtype_from_name(value)
        except RuntimeError:
            raise BoomError(f"invalid recipe: {key}: {value!r} is not a dtype; use one of {', '.join(DTYPES)}",
                            path=recipe) from None


def _check_boom_scale(config: Any, recipe: Path | None) -> None:
    """``boom``'s scale rule (:func:`boom_merge.merge.methods.check_scale`) for every scale the recipe sets."""
    from boom_merge.merge.methods import check_scale

    for _, values, _ in _settings(config):
        for leaf in _leaves(values.get("scale", 1.0)):
            try:
                check_scale(_as_float(leaf), has_base=config.base_model is not None)
            except ValueError as error:
                raise BoomError(f"invalid recipe: {error}", path=recipe) from None
