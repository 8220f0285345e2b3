"""Run a mergekit recipe end to end: validate, merge, finish the sentence-transformers head.

This is the library behind ``boom-merge merge`` and ``boom-merge incremental``. It
uses mergekit's own configuration, planner and executor (with the fixes in
:mod:`boom_merge.mergekit_compat`), checks every input before anything is written,
and writes the output atomically.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import yaml

from boom_merge.checks import check_inputs
from boom_merge.errors import BoomError
from boom_merge.outputs import atomic_output_dir
from boom_merge.recipes import ordered_references

logger = logging.getLogger(__name__)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
RECIPE_FILE = "boom_recipe.yml"
# mergekit keeps a whole output shard in memory before writing it; its default (5B
# parameters) means the whole merged model. 1B bounds that for large merges.
DEFAULT_OUT_SHARD_SIZE = "1B"


def ordered_inputs(config: Any) -> list[str]:
    """Input model paths in recipe order, base last."""
    return [ref.model.path for ref in ordered_references(config)]


def load_recipe(recipe: str | Path) -> tuple[Any, str]:
    """Parse and validate a mergekit YAML recipe; return (configuration, source text)."""
    from mergekit.config import MergeConfiguration
    from pydantic import ValidationError

    recipe = Path(recipe)
    try:
        text = recipe.read_text(encoding="utf-8")
        data = yaml.safe_load(text)
    except OSError as error:
        raise BoomError(f"cannot read recipe ({error.strerror})", path=recipe) from None
    except yaml.YAMLError as error:
        raise BoomError(f"invalid YAML ({str(error).splitlines()[0]})", path=recipe) from None
    if not isinstance(data, dict):
        raise BoomError("a recipe must be a YAML mapping with merge_method and models", path=recipe)
    try:
        config = MergeConfiguration.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise BoomError(f"invalid recipe: {where}: {first['msg']}", path=recipe) from None
    check_method_and_parameters(config, recipe)
    return config, text


def _parameter_settings(config: Any) -> list[tuple[str, dict[str, Any]]]:
    settings = [("parameters", config.parameters or {})]
    for model in config.models or []:
        settings.append((f"models[{model.model.model.path}].parameters", model.parameters or {}))
    return settings


def check_method_and_parameters(config: Any, recipe: Path) -> None:
    """Unknown methods or parameters, and invalid scalar values, name the valid ones."""
    from mergekit.merge_methods import registered_methods

    from boom_merge.mergekit_compat import ensure_applied

    ensure_applied()
    methods = {m.spec.name: m for m in registered_methods()}
    method = methods.get(config.merge_method)
    if method is None:
        raise BoomError(
            f"unknown merge_method {config.merge_method!r}; valid: {', '.join(sorted(methods))}",
            path=recipe,
        )
    specs = {p.name: p for p in method.spec.parameters}
    for where, values in _parameter_settings(config):
        for name, value in values.items():
            if name not in specs:
                raise BoomError(
                    f"unknown parameter {name!r} in {where} for {config.merge_method}; "
                    f"valid: {', '.join(sorted(specs)) or 'none'}",
                    path=recipe,
                )
            if isinstance(value, (int, float, str, bool)):
                try:
                    specs[name].validate(value)
                except ValueError as error:
                    message = str(error).splitlines()[-1].strip()
                    raise BoomError(f"invalid {name}={value!r} in {where}: {message}", path=recipe) from None


def check_recipe_inputs(config: Any, *, allow_pickle: bool) -> None:
    """Run :mod:`boom_merge.checks` on every local input; Hub ids are left to mergekit."""
    local = []
    for path in ordered_inputs(config):
        if Path(path).exists() or not _HUB_ID.match(path):
            local.append(path)
    check_inputs(local, allow_pickle=allow_pickle)


def _parameter_count(size: str) -> int:
    from mergekit.common import parse_kmb

    try:
        return int(parse_kmb(size))
    except (ValueError, TypeError):
        raise BoomError(f"invalid shard size {size!r}; use a count such as 250M or 1B") from None


def run_recipe(
    config: Any,
    out: str | Path,
    *,
    recipe_text: str,
    force: bool = False,
    cuda: bool = False,
    allow_pickle: bool = False,
    out_shard_size: str = DEFAULT_OUT_SHARD_SIZE,
    extra_files: dict[str, str] | None = None,
) -> Path:
    """Merge into ``out`` atomically; ``extra_files`` (name -> text) are written beside the model.

    ``out_shard_size`` is mergekit's parameters per output shard (``"250M"``, ``"1B"``).
    """
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    from boom_merge.mergekit_compat import ensure_applied

    ensure_applied()
    out = Path(out)
    if out.exists() and not force:
        raise BoomError("output already exists; pass --force to replace it", path=out)
    for path in ordered_inputs(config):
        if Path(path).resolve() == out.resolve():
            raise BoomError("output would overwrite an input model", path=out)
    check_recipe_inputs(config, allow_pickle=allow_pickle)
    # mergekit's own card is replaced by ours (boom_merge.card), so it is not written.
    options = MergeOptions(cuda=cuda, lazy_unpickle=allow_pickle, write_model_card=False,
                           out_shard_size=_parameter_count(out_shard_size))
    with atomic_output_dir(out, force=force) as tmp:
        # Written first so that the model card (written by the merge) can describe them.
        (tmp / RECIPE_FILE).write_text(recipe_text, encoding="utf-8")
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
        try:
            run_merge(config, str(tmp), options=options, config_source=recipe_text)
        except BoomError:
            raise
        except Exception as error:  # mergekit raises many types; users get one line
            logger.debug("mergekit failed", exc_info=True)
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise BoomError(f"merge failed: {first_line}") from None
    return out


def merge_recipe(
    recipe: str | Path,
    out: str | Path,
    *,
    force: bool = False,
    cuda: bool = False,
    allow_pickle: bool = False,
    out_shard_size: str = DEFAULT_OUT_SHARD_SIZE,
) -> Path:
    """``boom-merge merge``: a mergekit recipe in, a sentence-transformers-correct model out."""
    config, text = load_recipe(recipe)
    return run_recipe(config, out, recipe_text=text, force=force, cuda=cuda, allow_pickle=allow_pickle,
                      out_shard_size=out_shard_size)
