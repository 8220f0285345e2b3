"""Questions about a model, answered from its provenance records (a corrupt file: one line naming it; a
missing one: unknown).

Owns: :func:`walk` (the one lineage walker, at most :data:`MAX_DEPTH` links deep), :func:`training_datasets`
(in-domain tagging), :func:`full_data_index`, :func:`hub_bases` (a card's ``base_model``), and :func:`hub_repo`. It
never writes, and imports nothing of boom-merge but :mod:`.records` and :mod:`boom_merge.model_refs`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from boom_merge.lineage.records import MAX_DEPTH, InputRecord, read_lineage, read_member_manifest

logger = logging.getLogger(__name__)

T = TypeVar("T")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def walk(model_dir: str | Path, answer: Callable[[Path, Callable[[Path], T]], T], *, too_deep: T) -> T:
    """Answer a question about ``model_dir`` link by link: ``answer`` answers for one model dir, calling ``recurse``
    for each model dir it is made from; one more than :data:`MAX_DEPTH` links away answers ``too_deep``."""

    def visit(path: Path, depth: int) -> T:
        if depth > MAX_DEPTH:
            logger.warning("%s: lineage deeper than %d links; not followed further", path, MAX_DEPTH)
            return too_deep
        return answer(path, lambda inner: visit(Path(inner), depth + 1))

    return visit(Path(model_dir), 0)


def hub_repo(spec: str) -> str | None:
    """The Hub id a record's model name means (``org/name[@REV]``, not a local path), else None."""
    repo = spec.partition("@")[0]
    return repo if _HUB_ID.match(repo) else None


def full_data_index(samplings: Iterable[tuple[float | None, str | None]]) -> int | None:
    """Index of the first full-data (BLS) member among ``(sample_ratio, mode)`` pairs, None if none.

    The full-data member trains on every row of every dataset: sample ratio 1, drawn without
    replacement (a manifest that records no mode was drawn so: it is the default).
    """
    for index, (ratio, mode) in enumerate(samplings):
        if ratio == 1.0 and mode in (None, "without_replacement"):
            return index
    return None


def training_datasets(model_dir: str | Path) -> frozenset[str] | None:
    """The names of the datasets a model was trained on, or None when unknown.

    A member's come from its manifest; a merge's from each input: the datasets recorded
    with it, else its copied manifest, else the input model itself if it still exists.
    One unknown input makes the whole model unknown (then no task is called in-domain
    silently). A copy of a Hub model knows nothing of its training data.
    """
    return walk(model_dir, _datasets_of, too_deep=None)


def _datasets_of(model_dir: Path, recurse: Callable[[Path], frozenset[str] | None]) -> frozenset[str] | None:
    manifest, lineage = read_member_manifest(model_dir), read_lineage(model_dir)
    if manifest is None and (lineage is None or lineage.source is not None):
        return None
    names = set(manifest.dataset_names()) if manifest else set()
    for record in lineage.inputs if lineage else ():
        found = _input_datasets(record, model_dir, recurse)
        if found is None:
            logger.warning("%s: the training datasets of input %s are unknown", model_dir, record.path)
            return None
        names |= found
    return frozenset(names)


def _input_datasets(record: InputRecord, model_dir: Path, recurse: Callable[[Path], Any]) -> frozenset[str] | None:
    if record.datasets is not None:
        return frozenset(record.datasets)
    if record.manifest:
        copy = read_member_manifest(model_dir / record.manifest)
        if copy is not None:
            return copy.dataset_names()
    if record.path and (model_dir / record.path).is_dir():
        return recurse(model_dir / record.path)
    return None


def hub_bases(model_dir: str | Path) -> list[str]:
    """The Hub ids a model derives from, nearest first, in the merge's order; [] when none is known.

    A Hub model (a cache snapshot) is itself; a member: its base's id (recorded, or its
    base's own bases); a merge: each input's id, or for a local input its bases; a copy of a
    Hub model (a re-save) or an embedding base built from one: that model.
    """
    return list(dict.fromkeys(walk(model_dir, _bases_of, too_deep=[])))


def _bases_of(model_dir: Path, recurse: Callable[[Path], list[str]]) -> list[str]:
    manifest, lineage = read_member_manifest(model_dir), read_lineage(model_dir)
    if manifest is not None:
        return [manifest.base_model_id] if manifest.base_model_id else _spec_bases(manifest.base_model, recurse)
    if lineage is not None and lineage.source is not None:
        return [str(lineage.source["hub_id"])] if lineage.source.get("hub_id") else []
    if lineage is not None:
        return [base for record in lineage.inputs for base in _record_bases(record, model_dir, recurse)]
    from boom_merge.model_refs import resolve_model

    hub_id = resolve_model(model_dir).hub_id
    return [hub_id] if hub_id else []


def _record_bases(record: InputRecord, model_dir: Path, recurse: Callable[[Path], list[str]]) -> list[str]:
    if record.hub_id:
        return [record.hub_id]
    if record.hub_bases is not None:
        return list(record.hub_bases)
    if record.manifest:
        copy = read_member_manifest(model_dir / record.manifest)
        if copy is not None:
            return [copy.base_model_id] if copy.base_model_id else _spec_bases(copy.base_model, recurse)
    return _spec_bases(record.path, recurse)


def _spec_bases(spec: str | None, recurse: Callable[[Path], list[str]]) -> list[str]:
    """Bases of a model named in a record: a dir that still exists, or a Hub id as written."""
    if not spec:
        return []
    if Path(spec).is_dir():
        return recurse(Path(spec))
    repo = hub_repo(spec)
    return [repo] if repo else []
