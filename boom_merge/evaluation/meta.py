"""MTEB ``ModelMeta`` of what ``boom-merge eval`` evaluates, for leaderboard-ready results.

Owns: the ``ModelMeta`` of every evaluated model and in-domain tagging. It never writes and
never reads lineage files directly.

Each result folder's ``model_meta.json`` carries mteb's own fields: ``name`` (the Hub
id, ``--model-name``, or ``boom-merge/LABEL``), ``revision`` (the Hub commit, else the
content hash :func:`boom_merge.lineage.model_sha256`; never a placeholder),
``n_parameters``, ``embed_dim``, ``max_tokens``, ``license`` (the model card's),
``training_datasets`` and ``adapted_from`` (from :mod:`boom_merge.lineage`, else mteb's
registry for a Hub model it knows). The training datasets also decide in-domain tagging
(:func:`tagged_datasets`). This module reads lineage through :mod:`boom_merge.lineage`
only; it writes nothing.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

if TYPE_CHECKING:
    from mteb.models.model_meta import ModelMeta
    from sentence_transformers import SentenceTransformer

    from boom_merge.model_refs import ResolvedModel

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Row:
    """One row of the evaluation: a model, or the ensemble of ``models``, named ``name`` in MTEB."""

    label: str
    models: list[ResolvedModel]
    name: str
    ensemble: bool = False


def trained_names(model: ResolvedModel) -> frozenset[str] | None:
    """The datasets ``model`` was trained on: its lineage, else mteb's registry entry; None if unknown."""
    from boom_merge.lineage import training_datasets

    known = training_datasets(model.path)
    if known is None and model.hub_id:
        registry = registry_meta(model.hub_id)
        if registry is not None and registry.training_datasets is not None:
            return frozenset(registry.training_datasets)
    return known


def registry_meta(hub_id: str) -> ModelMeta | None:
    """mteb's own metadata of a Hub model it knows (offline: its registry only), else None."""
    import mteb

    try:
        meta = mteb.get_model_meta(hub_id, fetch_from_hf=False)
    except (KeyError, ValueError):
        return None
    return meta if meta.name == hub_id else None


def model_meta(model: ResolvedModel, st: SentenceTransformer, *, name: str) -> ModelMeta:
    """The ``ModelMeta`` of one model (validated by mteb's own pydantic model)."""
    from mteb.models.model_meta import ModelMeta

    from boom_merge.lineage import hub_bases, model_sha256

    registry = registry_meta(model.hub_id) if model.hub_id else None
    trained = trained_names(model)
    bases = [base for base in hub_bases(model.path) if base != model.hub_id]
    base = ModelMeta.from_sentence_transformer_model(st)
    update: dict[str, Any] = {
        "name": name,
        "revision": model.revision or model_sha256(model.path),
        "n_parameters": sum(p.numel() for p in st.parameters()),
        "embed_dim": st.get_embedding_dimension(),
        "max_tokens": st.max_seq_length,
        "license": card_licence(model.path) or (registry.license if registry else None),
        "open_weights": True,
        "training_datasets": None if trained is None else set(trained) | local_task_names(trained),
        "adapted_from": bases[0] if bases else (registry.adapted_from if registry else None),
    }
    if registry is not None:
        for key in ("release_date", "languages", "reference", "public_training_code", "public_training_data"):
            update[key] = getattr(registry, key)
    return ModelMeta.model_validate({**dict(base), **update})


def ensemble_meta(base: ModelMeta, members: list[ModelMeta], *, name: str) -> ModelMeta:
    """The ``ModelMeta`` of an embedding ensemble: its members' sizes summed, data united."""
    from mteb.models.model_meta import ModelMeta

    revision = hashlib.sha256("\n".join(f"{m.name}@{m.revision}" for m in members).encode()).hexdigest()
    expanded = [m.get_training_datasets() for m in members]
    sizes = [m.n_parameters for m in members]
    licences = {m.license for m in members}
    update = {
        "name": name,
        "revision": revision,
        "n_parameters": None if None in sizes else sum(sizes),  # type: ignore[arg-type]
        "embed_dim": members[0].embed_dim,
        "max_tokens": min((m.max_tokens for m in members if m.max_tokens), default=None),
        "license": licences.pop() if len(licences) == 1 else None,
        "open_weights": True,
        "training_datasets": None if any(e is None for e in expanded) else set().union(*expanded),
        "adapted_from": None,
    }
    return ModelMeta.model_validate({**dict(base), **update})


def tagged_datasets(meta: Any) -> frozenset[str] | None:
    """Everything ``meta`` counts as trained on, with mteb's similar tasks and its base's data."""
    found = meta.get_training_datasets()
    return None if found is None else frozenset(found)


def local_task_names(names: frozenset[str]) -> set[str]:
    """The local MTEB task names of the known corpus sources among ``names``."""
    from boom_merge.data.corpora.sources import registry
    from boom_merge.evaluation.tasks import local_task_name

    known = registry()
    return {
        local_task_name(known[name].task, known[name].mteb.label)
        for name in names
        if name in known and known[name].mteb is not None
    }


def card_licence(model_dir: Path) -> str | None:
    """The ``license`` of the model card's metadata if mteb accepts it (an identifier or URL)."""
    from mteb.types._metadata import Licenses

    card = model_dir / "README.md"
    if not card.is_file():
        return None
    from huggingface_hub import ModelCard

    try:
        licence = ModelCard.load(card).data.get("license")
    except Exception as error:  # noqa: BLE001 - a card we cannot parse only loses the licence
        logger.warning("%s: model card unreadable (%s); licence unknown", card, error)
        return None
    if isinstance(licence, str) and (licence in get_args(Licenses) or licence.startswith(("http://", "https://"))):
        return licence
    return None
