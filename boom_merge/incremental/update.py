"""Incremental BOOM updates: fold an update model into an existing model.

Owns: incremental updates: their recipes (interpolate, add) and the update's own lineage fields
(mode, weight, update base). It may not choose the weight (:mod:`boom_merge.incremental.update_weight`
does), and it never writes into OLD, UPDATE or BASE.

The paper's cheap update: train an update model on the new data plus a small sample
of the old (``boom-merge train-update``), then merge it into the existing model. Two
modes, both written as recipes that plain ``mergekit-yaml`` runs:

- ``interpolate`` (the default): ``(1 - α)·OLD + α·UPDATE`` with ``boom_incremental``
  (slerp or linear);
- ``add``: ``OLD + λ·(UPDATE − BASE)``, BASE the model the update was trained from (its
  manifest's ``init_model``, else its ``base_model``; ``update_base`` overrides), as
  mergekit's ``task_arithmetic`` over BASE with OLD at weight 1, UPDATE at weight λ and
  ``normalize: false`` (mergekit computes ``BASE + Σ wᵢ·(Mᵢ − BASE)``).

OLD, UPDATE and BASE are local dirs or Hub ids (``org/name[@REV]``, resolved by
:func:`boom_merge.model_refs.resolve_model`); a Hub model is named in the recipe as
``org/name@COMMIT`` and in the lineage by its id and commit, never by its cache path.
The existing model is only read; the new model records its lineage (mode, weight,
inputs with content hashes, and the existing model's own lineage). Choosing the weight
on dev splits is :mod:`boom_merge.incremental.update_weight`'s job.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from boom_merge.errors import BoomError
from boom_merge.lineage import LINEAGE_FILE, incremental_lineage, model_record, model_sha256, read_member_manifest
from boom_merge.merge.pipeline import DEFAULT_OUT_SHARD_SIZE, output_dtype
from boom_merge.outputs import check_output

logger = logging.getLogger(__name__)

Mode = Literal["interpolate", "add"]
MODES: tuple[str, ...] = ("interpolate", "add")
#: the weight when none is given: α = 0.5 (interpolate), λ = 1 (add: the whole task vector)
DEFAULT_WEIGHTS = {"interpolate": 0.5, "add": 1.0}


def _with_dtype(recipe: dict[str, Any], old: Path) -> dict[str, Any]:
    """The recipe with OLD's dtype out (:func:`boom_merge.merge.pipeline.output_dtype`: the output continues OLD)."""
    out_dtype = output_dtype(old)
    return recipe | ({"out_dtype": out_dtype} if out_dtype not in (None, recipe["dtype"]) else {})


def incremental_recipe(
    old: Path, update: Path, *, update_weight: float, interpolation: str,
    old_ref: str | None = None, update_ref: str | None = None,
) -> dict[str, Any]:
    """The ``boom_incremental`` recipe: existing model as base, update as the one input.

    ``old``/``update`` are local dirs (read here); ``*_ref`` what the recipe names instead (a Hub ``id@commit``).
    """
    recipe: dict[str, Any] = {
        "merge_method": "boom_incremental",
        "base_model": old_ref or str(old),
        "models": [{"model": update_ref or str(update)}],
        "parameters": {"update_weight": update_weight, "interpolation": interpolation},
        "dtype": "float32",
    }
    return _with_dtype(recipe, old)


def add_recipe(
    old: Path, update: Path, base: str, *, update_weight: float,
    old_ref: str | None = None, update_ref: str | None = None, base_path: Path | None = None,
) -> dict[str, Any]:
    """``task_arithmetic`` over ``base``: OLD at weight 1, UPDATE at weight λ, not normalised.

    When BASE is OLD itself (an update trained from the existing model) OLD's delta is
    zero and it is left out: the recipe is then ``OLD + λ·(UPDATE − OLD)``. ``*_ref`` as in
    :func:`incremental_recipe`; ``base_path`` BASE's local dir (a Hub BASE's snapshot).
    """
    same = _same_model(old, base) or (base_path is not None and base_path.resolve() == old.resolve())
    models = [] if same else [{"model": old_ref or str(old), "parameters": {"weight": 1.0}}]
    models.append({"model": update_ref or str(update), "parameters": {"weight": float(update_weight)}})
    recipe: dict[str, Any] = {
        "merge_method": "task_arithmetic",
        "base_model": base,
        "models": models,
        "parameters": {"normalize": False, "lambda": 1.0},
        "dtype": "float32",
    }
    return _with_dtype(recipe, old)


def _same_model(path: Path, spec: str) -> bool:
    return Path(spec).is_dir() and Path(spec).resolve() == path.resolve()


@dataclass(frozen=True)
class UpdateBase:
    """The model an update was trained from: ``spec`` for the recipe, its local ``path``, its hash."""

    spec: str
    path: Path
    sha256: str
    hub_id: str | None = None
    revision: str | None = None

    def record(self) -> dict[str, Any]:
        """Its lineage record."""
        return model_record(self.path, (self.hub_id, self.revision) if self.hub_id else None, sha256=self.sha256)


def recorded_base(update: Path) -> tuple[str, str | None]:
    """``(spec, sha256)`` of the model ``update`` was trained from, from its ``boom_member.json``.

    ``train-update`` records the weights it started from as ``init_model`` (the base, or
    the existing model with ``--init existing``); a member records its ``base_model``. A
    Hub model is ``id@commit``.
    """
    manifest = read_member_manifest(update)
    if manifest is None:
        raise BoomError("no boom_member.json: cannot tell which model UPDATE was trained from; "
                        "pass --update-base BASE", path=update)
    data = manifest.data
    if isinstance(data.get("init_model"), str):
        spec, revision, sha = data["init_model"], data.get("init_model_revision"), data.get("init_model_sha256")
    else:
        spec, revision, sha = manifest.base_model, manifest.base_model_revision, data.get("base_model_sha256")
    if not spec:
        raise BoomError("boom_member.json records no base model; pass --update-base BASE", path=manifest.file)
    if revision and not Path(spec).is_dir():
        spec = f"{spec}@{revision}"
    return spec, sha if isinstance(sha, str) else None


def resolve_update_base(update: Path, update_base: str | Path | None = None) -> UpdateBase:
    """The BASE of ``add`` mode: ``update_base`` if given, else the one UPDATE's manifest records.

    A recorded base whose content hash no longer matches the manifest is refused (the task
    vector would be wrong); an explicit ``update_base`` that differs is used with a warning.
    """
    from boom_merge.model_refs import resolve_model

    if update_base is None:
        spec, expected = recorded_base(update)
    else:
        spec, expected = str(update_base), None
        try:
            expected = recorded_base(update)[1]
        except BoomError:  # no manifest, or one without a base: the given BASE is all there is
            pass
    resolved = resolve_model(spec)
    digest = model_sha256(resolved.path)
    if expected and digest != expected:
        if update_base is None:
            raise BoomError(f"is not the model the update was trained from (sha256 {digest[:12]}, its manifest "
                            f"records {expected[:12]}); pass --update-base BASE", path=spec)
        logger.warning("%s: not the model %s's manifest records (sha256 differs); using it as BASE", spec, update)
    # a Hub id: pinned to the commit that was hashed
    return UpdateBase(resolved.recipe_name, resolved.path, digest, resolved.hub_id, resolved.revision)


@dataclass(frozen=True)
class IncrementalResult:
    path: Path
    lineage: dict[str, Any]


def check_weight(mode: str, update_weight: float) -> None:
    """α in [0, 1] (interpolate); λ finite and >= 0 (add)."""
    if mode not in MODES:
        raise BoomError(f"unknown --mode {mode!r}; choose interpolate or add")
    if not math.isfinite(update_weight) or update_weight < 0 or (mode == "interpolate" and update_weight > 1):
        bound = "[0, 1]" if mode == "interpolate" else ">= 0"
        raise BoomError(f"--update-weight must be {bound} for --mode {mode}, got {update_weight}")


@dataclass(frozen=True)
class InputModel:
    """OLD or UPDATE: ``path`` the local dir read; a Hub model also its id and resolved commit."""

    path: Path
    hub_id: str | None = None
    revision: str | None = None

    @property
    def ref(self) -> str:
        """What the recipe names: the dir, or ``org/name@COMMIT`` (pinned to what was hashed)."""
        return f"{self.hub_id}@{self.revision}" if self.hub_id else str(self.path)

    @property
    def hub(self) -> tuple[str, str | None] | None:
        """``(id, commit)`` of a Hub model, for its lineage record; None for a local dir."""
        return (self.hub_id, self.revision) if self.hub_id else None


def resolve_input(model: str | Path | InputModel) -> InputModel:
    """A local dir as given, made absolute (a cache snapshot dir too); else a Hub id via ``resolve_model``."""
    from boom_merge.model_refs import resolve_model

    if isinstance(model, InputModel):
        return model
    if Path(model).is_dir():
        return InputModel(Path(model).absolute())
    resolved = resolve_model(model)  # a file, a bad id, a model not on the Hub or not in the cache: one line
    if resolved.hub_id is None:  # "~/dir": resolve_model expands the user
        return InputModel(resolved.path)
    return InputModel(resolved.path, resolved.hub_id, resolved.revision)


def check_inputs(
    old: str | Path | InputModel, update: str | Path | InputModel, out: Path, *, force: bool = False
) -> tuple[InputModel, InputModel]:
    """OLD and UPDATE exist (dirs or Hub ids) and differ; OUT passes the outputs rule. Nothing is hashed yet."""
    old, update = resolve_input(old), resolve_input(update)
    if old.path.resolve() == update.path.resolve():
        raise BoomError(f"UPDATE is OLD ({update.ref}): give the update model trained on the new data")
    check_output(out, inputs=(old.path, update.path), force=force)  # before hashing: OLD and UPDATE stay untouched
    return old, update


def incremental_merge(
    old: str | Path | InputModel,
    update: str | Path | InputModel,
    out: str | Path,
    *,
    update_weight: float | None = None,
    mode: Mode = "interpolate",
    interpolation: Literal["slerp", "linear"] = "slerp",
    update_base: str | Path | None = None,
    force: bool = False,
    allow_pickle: bool = False,
    cuda: bool = False,
    out_shard_size: str = DEFAULT_OUT_SHARD_SIZE,
    base: UpdateBase | None = None,
    report_files: dict[str, str | bytes] | None = None,
    lineage_extra: dict[str, Any] | None = None,
) -> IncrementalResult:
    """Merge ``update`` into ``old`` (each a dir or Hub id) as ``out``; ``old`` is never written to.

    ``update_weight`` is α (interpolate) or λ (add), default :data:`DEFAULT_WEIGHTS`;
    ``base`` an already resolved :class:`UpdateBase` (add mode; else resolved here);
    ``report_files`` (name -> content) are written into ``out`` with the model, and
    ``lineage_extra`` into its lineage.
    """
    from mergekit.config import MergeConfiguration

    from boom_merge.merge.pipeline import run_recipe

    out = Path(out).absolute()
    weight = DEFAULT_WEIGHTS.get(mode, 0.5) if update_weight is None else float(update_weight)
    check_weight(mode, weight)
    old_in, update_in = check_inputs(old, update, out, force=force)
    if mode == "add":
        base = base or resolve_update_base(update_in.path, update_base)
        check_output(out, inputs=(old_in.path, update_in.path, base.path), force=force)
        recipe = add_recipe(old_in.path, update_in.path, base.spec, update_weight=weight,
                            old_ref=old_in.ref, update_ref=update_in.ref, base_path=base.path)
        # named as cards name models (a Hub id, else the dir's name): the card shows this line as it is
        formula = f"OLD + {weight:g} * (UPDATE - BASE), BASE = {base.hub_id or base.path.name}"
    else:
        recipe = incremental_recipe(old_in.path, update_in.path, update_weight=weight, interpolation=interpolation,
                                    old_ref=old_in.ref, update_ref=update_in.ref)
        formula = f"(1 - {weight:g}) * OLD + {weight:g} * UPDATE ({interpolation})"
    text = (f"# Written by `boom-merge incremental --mode {mode}`: {formula}\n"
            + yaml.safe_dump(recipe, sort_keys=False))
    lineage = incremental_lineage(old_in.path, update_in.path, update_weight=weight, interpolation=interpolation,
                                  old_hub=old_in.hub, update_hub=update_in.hub)
    lineage["mode"] = mode
    if mode == "add":
        del lineage["interpolation"]
        lineage["update_base"] = base.record()
    lineage |= lineage_extra or {}
    run_recipe(
        MergeConfiguration.model_validate(recipe),
        out,
        recipe_text=text,
        force=force,
        cuda=cuda,
        allow_pickle=allow_pickle,
        out_shard_size=out_shard_size,
        extra_files={LINEAGE_FILE: json.dumps(lineage, indent=2) + "\n", **(report_files or {})},
    )
    return IncrementalResult(out, lineage)
