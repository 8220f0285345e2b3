"""The one merge pipeline: validate -> check inputs -> plan the head -> mergekit -> finish.

Every merge runs these steps, whoever starts it: ``boom-merge merge``
(:func:`merge_recipe`), ``incremental`` and ``tune`` (:func:`run_recipe`), and plain
``mergekit-yaml`` through the import hook (:func:`merge_in_place`, called by the
wrapped ``mergekit.merge.run_merge``, see :mod:`boom_merge.mergekit_compat`).

1. :func:`validate_recipe` / :func:`validate_config`: a strict recipe. Unknown keys and
   unknown method parameters are refused naming the valid ones; weights finite,
   non-negative, with a positive sum; no empty ``models`` list, no model listed twice.
   Every recipe error names the recipe file.
2. :func:`plan_merge`: the output rule (:func:`boom_merge.outputs.check_output`: never
   into, over or around an input), inputs resolved (Hub ids through
   :func:`boom_merge.models.resolve_model`) and checked (config, tokenizer, honest
   safetensors headers, same tensors, finite weights, no pickles unless allowed), the
   sentence-transformers head planned (:func:`boom_merge.st_head.plan_head`: inputs that
   embed differently are refused), and the dtype rule applied: the output keeps the
   inputs' dtype, the arithmetic runs in float32, ``dtype`` overrides the output's.
3. mergekit's own ``run_merge``, unpatched.
4. :func:`finish_merge`: the head (settings, modules, merged ``Dense`` layers), the
   lineage (:func:`boom_merge.lineage.write_lineage`) and the card
   (:func:`boom_merge.card.write_model_card`, titled with the final output name).

boom-merge's own commands write atomically (:func:`boom_merge.outputs.atomic_output_dir`);
plain ``mergekit-yaml`` writes OUT itself, as mergekit does.
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from boom_merge.checks import check_same_tensors, model_files
from boom_merge.errors import BoomError
from boom_merge.recipes import DTYPES, ordered_references

logger = logging.getLogger(__name__)

RECIPE_FILE = "boom_recipe.yml"
# mergekit keeps a whole output shard in memory before writing it; its default (5B
# parameters) means the whole merged model. 1B bounds that for large merges.
DEFAULT_OUT_SHARD_SIZE = "1B"
ALLOW_PICKLE_ENV = "BOOM_MERGE_ALLOW_PICKLE"  # plain mergekit-yaml's --allow-pickle
_SAFETENSORS_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16", "F64": "float64"}


@dataclass(frozen=True)
class MergeJob:
    """A validated, checked merge, ready for mergekit.

    ``config`` is what mergekit runs (dtype rule applied, Hub ids replaced by their
    snapshots); ``refs`` the recipe's inputs in recipe order, base last; ``models`` their
    resolved local dirs (same order); ``head`` the sentence-transformers head plan (of the
    recipe's own references), ``None`` for plain transformers inputs.
    """

    config: Any
    refs: tuple[Any, ...]
    models: tuple[Any, ...]
    head: Any


# ---------------------------------------------------------------- 1. validate


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


def _numbers(value: Any) -> Iterator[float]:
    """Every number in a parameter setting (scalars, gradients, conditional values)."""
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield float(value)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _numbers(item)
    elif hasattr(value, "value"):  # mergekit's ConditionalParameter
        yield from _numbers(value.value)


def _check_value(method: Any, spec: Any, value: Any, where: str, recipe: Path | None) -> None:
    for number in _numbers(value):
        if not math.isfinite(number):
            raise BoomError(f"{spec.name} in {where} must be finite, got {number}", path=recipe)
        if spec.name == "weight" and number < 0:
            raise BoomError(f"weight in {where} must be non-negative, got {number}", path=recipe)
    if isinstance(value, (int, float, str, bool)):
        try:
            spec.validate(value)
        except (ValueError, TypeError) as error:
            message = str(error).strip().splitlines()[-1].strip()
            raise BoomError(f"invalid {spec.name}={value!r} in {where} for {method}: {message}", path=recipe) from None


def _check_models(config: Any, method: Any, recipe: Path | None) -> None:
    """No model listed twice; something to merge besides the base; weights with a positive sum."""
    entries = [entry.model for entry in config.models or []]
    for model, count in Counter(entries).items():
        if count > 1:
            raise BoomError(f"model {model} is listed {count} times in models:", path=recipe)
    if not entries:
        return
    merged = [model for model in entries if model != config.base_model]
    if not merged and method.spec.contract.min_non_base:
        raise BoomError(f"every model in models: is the base_model {config.base_model}; "
                        f"{config.merge_method} needs at least one other model to merge into it", path=recipe)
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


# ---------------------------------------------------------------- 2. plan


def _resolve(ref: Any) -> Any:
    from boom_merge.models import resolve_model

    spec = ref.model.path + (f"@{ref.model.revision}" if ref.model.revision else "")
    return resolve_model(spec)


def _transformer_dir(path: Path) -> Path:
    from boom_merge.models import transformer_dir

    return transformer_dir(path)


def stored_dtype(files: Any) -> str | None:
    """The most common floating dtype of a model's safetensors (``"bfloat16"``, ...)."""
    counts = Counter(_SAFETENSORS_DTYPES[t.dtype] for t in files.tensors.values() if t.dtype in _SAFETENSORS_DTYPES)
    return counts.most_common(1)[0][0] if counts else None


def _with_dtypes(config: Any, stored: str | None, dtype: str | None) -> Any:
    """The inputs' dtype out, float32 arithmetic, ``dtype`` overriding the output's."""
    if dtype is not None and dtype not in DTYPES:
        raise BoomError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    updates: dict[str, str] = {}
    if config.dtype is None and stored != "float64":
        updates["dtype"] = "float32"
    out = dtype or config.out_dtype or (stored if config.dtype is None else None)
    if out is not None and out != (updates.get("dtype") or config.dtype):
        updates["out_dtype"] = out
    return config.model_copy(update=updates, deep=True)


def _replaced(data: Any, names: dict[str, str]) -> Any:
    if isinstance(data, dict):
        return {key: _replaced(value, names) for key, value in data.items()}
    if isinstance(data, list):
        return [_replaced(value, names) for value in data]
    return names.get(data, data) if isinstance(data, str) else data


def _for_mergekit(config: Any, refs: tuple[Any, ...], models: tuple[Any, ...]) -> Any:
    """The configuration mergekit runs: Hub ids replaced by the snapshots they resolved to.

    mergekit would resolve them again and ask the Hub (even with HF_HUB_OFFLINE and a full cache).
    """
    from mergekit.config import MergeConfiguration

    local = {str(ref): str(model.path) for ref, model in zip(refs, models)
             if model.hub_id is not None and ref.lora is None and not Path(ref.model.path).is_dir()}
    if not local:
        return config
    return MergeConfiguration.model_validate(_replaced(config.model_dump(mode="json", exclude_none=True), local))


def plan_merge(
    config: Any,
    out: str | Path,
    *,
    force: bool = False,
    allow_pickle: bool = False,
    dtype: str | None = None,
    into_existing: bool = False,
) -> MergeJob:
    """Steps 1-2: everything that can refuse a merge, before anything is written.

    ``into_existing``: OUT may be an existing directory that is not an input (plain
    mergekit-yaml writes into it).
    """
    from boom_merge.models import check_model
    from boom_merge.outputs import check_output
    from boom_merge.st_head import plan_head

    validate_config(config)
    refs = tuple(ordered_references(config))
    models = tuple(_resolve(ref) for ref in refs)
    check_output(out, inputs=[m.path for m in models], force=force, into_existing=into_existing)
    files = [model_files(_transformer_dir(m.path), allow_pickle=allow_pickle) for m in models]
    check_same_tensors(files)
    for model in models:
        check_model(model.path, allow_pickle=allow_pickle)
    config = _with_dtypes(config, stored_dtype(files[0]), dtype)
    head = plan_head(config, [m.path for m in models])
    return MergeJob(_for_mergekit(config, refs, models), refs, models, head)


# ---------------------------------------------------------------- 4. finish


def finish_merge(job: MergeJob, out_dir: str | Path, *, recipe_text: str | None, title: str) -> None:
    """Make mergekit's output a sentence-transformers model with lineage and a card."""
    from boom_merge.card import write_model_card
    from boom_merge.lineage import write_lineage

    if job.head is None:
        return  # plain transformers inputs: mergekit's output is complete
    out_dir = Path(out_dir)
    job.head.write(out_dir)
    write_lineage(out_dir, job.head.config, list(job.refs))
    write_model_card(out_dir, inputs=[str(ref.model) for ref in job.refs], recipe_yaml=recipe_text,
                     method=job.config.merge_method, title=title)


# ---------------------------------------------------------------- the pipeline


def _parameter_count(size: str) -> int:
    from mergekit.common import parse_kmb

    try:
        return int(parse_kmb(size))
    except (ValueError, TypeError):
        raise BoomError(f"invalid shard size {size!r}; use a count such as 250M or 1B") from None


def _mergekit(run: Callable[[], Any]) -> None:
    """Run mergekit; its many exception types become one line."""
    try:
        run()
    except BoomError:
        raise
    except Exception as error:  # noqa: BLE001
        logger.debug("mergekit failed", exc_info=True)
        text = str(error).strip()
        raise BoomError(f"merge failed: {text.splitlines()[0] if text else type(error).__name__}") from None


def run_recipe(
    config: Any,
    out: str | Path,
    *,
    recipe_text: str,
    force: bool = False,
    cuda: bool = False,
    allow_pickle: bool = False,
    out_shard_size: str = DEFAULT_OUT_SHARD_SIZE,
    extra_files: dict[str, str | bytes] | None = None,
    dtype: str | None = None,
) -> Path:
    """Merge into ``out`` atomically; ``extra_files`` (relative name -> text or bytes) are written beside the model.

    ``out_shard_size`` is mergekit's parameters per output shard (``"250M"``, ``"1B"``);
    ``dtype`` the output's dtype (default: the inputs').
    """
    from mergekit.options import MergeOptions

    from boom_merge.mergekit_compat import upstream_run_merge
    from boom_merge.outputs import atomic_output_dir

    shard = _parameter_count(out_shard_size)
    job = plan_merge(config, out, force=force, allow_pickle=allow_pickle, dtype=dtype)
    # our card replaces mergekit's for sentence-transformers outputs
    options = MergeOptions(cuda=cuda, lazy_unpickle=allow_pickle, write_model_card=job.head is None,
                           out_shard_size=shard)
    with atomic_output_dir(out, force=force, inputs=[m.path for m in job.models]) as tmp:
        # written first so that the card (written after the merge) can describe them
        (tmp / RECIPE_FILE).write_text(recipe_text, encoding="utf-8")
        for name, content in (extra_files or {}).items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                (tmp / name).write_bytes(content)
            else:
                (tmp / name).write_text(content, encoding="utf-8")
        _mergekit(lambda: upstream_run_merge()(job.config, str(tmp), options=options, config_source=recipe_text))
        finish_merge(job, tmp, recipe_text=recipe_text, title=Path(out).name)
    return Path(out)


def merge_recipe(
    recipe: str | Path,
    out: str | Path,
    *,
    force: bool = False,
    cuda: bool = False,
    allow_pickle: bool = False,
    out_shard_size: str = DEFAULT_OUT_SHARD_SIZE,
    dtype: str | None = None,
) -> Path:
    """``boom-merge merge``: a mergekit recipe in, a sentence-transformers-correct model out."""
    config, text = load_recipe(recipe)
    return run_recipe(config, out, recipe_text=text, force=force, cuda=cuda, allow_pickle=allow_pickle,
                      out_shard_size=out_shard_size, dtype=dtype)


def merge_in_place(config: Any, out: str | Path, *, options: Any, config_source: str | None,
                   upstream: Callable[..., Any]) -> Any:
    """Plain ``mergekit-yaml`` (the wrapped ``run_merge``): the pipeline, with mergekit writing ``out``.

    An existing ``out`` that is not an input is written into, as mergekit does; pickled
    weights need ``BOOM_MERGE_ALLOW_PICKLE=1``.
    """
    job = plan_merge(config, out, into_existing=True, allow_pickle=os.environ.get(ALLOW_PICKLE_ENV) == "1")
    result = upstream(job.config, out, options, config_source)
    finish_merge(job, out, recipe_text=config_source, title=Path(out).name)
    return result
