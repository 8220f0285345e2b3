"""Lineage and card for a model merged elsewhere (``boom-merge card MODEL --recipe RECIPE``).

Owns: giving a model merged outside boom-merge (sentence-transformers' ``SentenceTransformer.merge``,
plain mergekit without the import hook) the records a ``boom-merge merge`` output carries:
``boom_recipe.yml``, ``boom_lineage.json`` (with ``boom_members/``) and the card. It never merges
and never touches MODEL's weights or settings; the lineage is written by
:func:`boom_merge.lineage.write_lineage` and the card by :func:`boom_merge.card.build.write_model_card`,
the writers the merge pipeline uses.

Everything that can refuse comes first, through the merge pipeline's own checks
(:func:`boom_merge.merge.pipeline.plan_merge`: a strict recipe, inputs resolved and checked, MODEL
never one of them, nor inside or around one), then MODEL is compared with the inputs (the same
tensors, the same sentence-transformers head) and with the recipe's merge itself: a sample of
:data:`SAMPLED` of its tensors (spread over sizes, each at most :data:`SAMPLE_MAX_ELEMENTS`) is merged
from the inputs by mergekit's in-memory API (``merge_tensors``, the call ``SentenceTransformer.merge``
makes) and must equal MODEL's to its precision (one unit in the last place of its dtype; float32:
8). A recipe that does not describe MODEL is refused. Recipes this cannot replay are compared by
structure only, as the log says: methods that draw random masks (DARE, DELLA, breadcrumbs), and
parameters that vary by layer (gradients, conditions) or recipes of slices or modules.
The records are built in a staging dir beside MODEL (MODEL's own files linked in, so
the card reads the model as it is), then each is moved into MODEL with one rename, under
MODEL's lock.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from pathlib import Path
from typing import Any

from boom_merge.card.build import CARD_FILE, write_model_card
from boom_merge.durable import fsync_path
from boom_merge.errors import BoomError
from boom_merge.lineage import LINEAGE_FILE, MEMBERS_DIR, write_lineage
from boom_merge.merge.pipeline import RECIPE_FILE, load_recipe, plan_merge
from boom_merge.outputs import output_lock

logger = logging.getLogger(__name__)

#: what the command writes into MODEL (replacing earlier versions)
WRITTEN = (RECIPE_FILE, LINEAGE_FILE, MEMBERS_DIR, CARD_FILE)


def _check_matches(model: Path, inputs: list[Path]) -> None:
    """MODEL has the inputs' tensors and embeds as they do; else the recipe does not describe it."""
    from boom_merge.merge.checks import check_same_tensors, model_files
    from boom_merge.model_refs import check_model, transformer_dir
    from boom_merge.merge.st_head import check_compatible, read_head

    check_model(model)
    try:
        check_same_tensors([model_files(transformer_dir(model)), model_files(transformer_dir(inputs[0]))])
        heads = [read_head(model), read_head(inputs[0])]
        if None in heads:
            raise BoomError("not a sentence-transformers model (no modules.json)", path=model if heads[0] is None
                            else inputs[0])
        check_compatible(heads)
    except BoomError as error:
        raise BoomError(f"the recipe's inputs do not match this model ({error})", path=model) from None


#: tensors of MODEL compared by value with the recipe's merge, and the largest one taken (elements)
SAMPLED = 4
SAMPLE_MAX_ELEMENTS = 1 << 24
_RANDOM = ("dare_linear", "dare_ties", "della", "della_linear", "breadcrumbs", "breadcrumbs_ties")


def _replayable(config: Any) -> str | None:
    """Why the recipe's merge cannot be replayed tensor by tensor (None: it can)."""
    if config.merge_method in _RANDOM:
        return f"{config.merge_method} draws random masks"
    if config.slices or config.modules:
        return "a recipe of slices or modules"
    settings = [config.parameters or {}, *(entry.parameters or {} for entry in config.models or [])]
    if any(not isinstance(value, (int, float, str, bool)) for values in settings for value in values.values()):
        return "its parameters vary by layer"
    return None


def _sample(names: dict[str, Any]) -> list[str]:
    """:data:`SAMPLED` tensor names spread over the sizes up to :data:`SAMPLE_MAX_ELEMENTS` (smallest to largest)."""
    sized = sorted((math.prod(info.shape), name) for name, info in names.items()
                   if 1 < math.prod(info.shape) <= SAMPLE_MAX_ELEMENTS)
    picks = {round(i * (len(sized) - 1) / max(SAMPLED - 1, 1)) for i in range(SAMPLED)} if sized else set()
    return [sized[i][1] for i in sorted(picks)]


def _check_values(model: Path, config: Any, job: Any) -> None:
    """MODEL's sampled tensors equal the recipe's merge of the inputs' (module docstring)."""
    import torch
    from mergekit.common import dtype_from_name
    from mergekit.merge_methods import get as get_method
    from mergekit.merge_methods import merge_tensors
    from safetensors import safe_open

    from boom_merge.merge.checks import model_files
    from boom_merge.model_refs import transformer_dir

    why = _replayable(config)
    if why is not None:
        logger.warning("%s: compared with the recipe's inputs by structure only, not by value (%s)", model, why)
        return
    files = dict(zip(job.refs, job.files))
    order = [entry.model for entry in config.models]
    if config.base_model is not None and config.base_model not in order:
        order.append(config.base_model)
    base_index = order.index(config.base_model) if config.base_model is not None else None
    # mergekit's rule: an input's own parameter, else the recipe's, else the method's default
    defaults = {spec.name: spec.default for spec in get_method(config.merge_method).spec.input_parameters}
    shared = dict(config.parameters or {})
    own = {entry.model: entry.parameters or {} for entry in config.models}
    parameters = {name: value for name, value in shared.items() if name not in defaults}
    for name in {name for values in own.values() for name in values} | (shared.keys() & defaults.keys()):
        parameters[name] = {index: own.get(ref, {}).get(name, shared.get(name, defaults.get(name)))
                            for index, ref in enumerate(order) if index != base_index}  # keyed by input index
    merged = model_files(transformer_dir(model))

    def read(info: Any, name: str) -> torch.Tensor:
        with safe_open(str(info.file), "pt") as handle:
            return handle.get_tensor(name)

    common = {name: info for name, info in merged.tensors.items() if all(name in files[ref].tensors for ref in order)}
    for name in _sample(common):
        actual = read(merged.tensors[name], name)
        expected = merge_tensors([read(files[ref].tensors[name], name) for ref in order], config.merge_method,
                                 parameters=parameters, base_index=base_index, name=name,
                                 dtype=dtype_from_name(config.dtype), out_dtype=actual.dtype)
        tolerance = max(8 * torch.finfo(torch.float32).eps, torch.finfo(actual.dtype).eps)
        difference = (expected.float() - actual.float()).abs()
        allowed = tolerance * (actual.float().abs() + actual.float().abs().mean())
        if expected.shape != actual.shape or bool((difference > allowed).any()):
            raise BoomError(f"the recipe does not describe this model: its merge of tensor {name!r} differs from "
                            f"the model's by up to {float(difference.max()):.3g}", path=model)


def _stage(model: Path, stage: Path) -> None:
    """``stage``: MODEL's files (links), less those the command writes."""
    stage.mkdir()
    for entry in model.iterdir():
        if entry.name not in WRITTEN:
            (stage / entry.name).symlink_to(entry.resolve(), target_is_directory=entry.is_dir())


def _move_in(stage: Path, model: Path) -> None:
    """Each record the stage holds replaces MODEL's with one rename; MODEL's other files stay."""
    for name in WRITTEN:
        new, old = stage / name, model / name
        if not new.exists():
            continue
        if new.is_dir() and old.is_dir() and not old.is_symlink():
            retired = stage / f"{name}.old"
            os.replace(old, retired)  # a directory cannot be renamed over a non-empty one
        os.replace(new, old)
    fsync_path(model)


def write_card(model: str | Path, recipe: str | Path) -> Path:
    """Give MODEL (merged elsewhere with RECIPE) boom-merge's recipe, lineage and card; return its card."""
    model = Path(model)
    if not model.is_dir():
        raise BoomError("model directory not found", path=model)
    config, text = load_recipe(recipe)
    job = plan_merge(config, model, into_existing=True)
    if job.head is None:
        raise BoomError("the recipe's inputs are not sentence-transformers models; mergekit's own card "
                        "describes a plain transformers merge", path=recipe)
    _check_matches(model, [m.path for m in job.models])
    _check_values(model, config, job)
    with output_lock(model):
        stage = model.parent / f".{model.name}.card-tmp"
        shutil.rmtree(stage, ignore_errors=True)
        try:
            _stage(model, stage)
            (stage / RECIPE_FILE).write_text(text, encoding="utf-8")
            write_lineage(stage, job.head.config, list(job.refs))
            write_model_card(stage, inputs=[str(ref.model) for ref in job.refs], recipe_yaml=text,
                             method=config.merge_method, title=model.name)
            _move_in(stage, model)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    logger.info("wrote %s's lineage and card", model)
    return model / CARD_FILE
