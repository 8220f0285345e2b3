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
tensors, the same sentence-transformers head): a recipe that does not describe MODEL is
refused. The records are built in a staging dir beside MODEL (MODEL's own files linked in, so
the card reads the model as it is), then each is moved into MODEL with one rename, under
MODEL's lock.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

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
