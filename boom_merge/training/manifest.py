"""The member manifest record (``boom_member.json``) as training builds it.

Owns: what a member manifest records. It never reads or writes a manifest file itself
(:mod:`boom_merge.lineage` does).

The record's pieces: the base's identity (its path or Hub id, the Hub id and commit it derives
from, its hash), package versions, and the keys that identify a run. Reading, validating and
writing the file, and the one model hash, belong to :mod:`boom_merge.lineage`.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Mapping
from dataclasses import asdict
from importlib import metadata
from typing import TYPE_CHECKING, Any

from boom_merge.lineage import FORMAT_VERSION, hub_bases, location, model_sha256, now
from boom_merge.training.config import TrainConfig

if TYPE_CHECKING:
    from boom_merge.model_refs import ResolvedModel

_VERSIONED_PACKAGES = ("boom-merge", "torch", "transformers", "sentence-transformers", "datasets", "accelerate", "peft")
# keys that say whether a finished member (or checkpoints) belong to the run a command asks for
_IDENTITY_KEYS = ("kind", "base_model_sha256", "datasets", "training_args", "schedule", "seed", "mode", "sample_ratio")


def base_record(base: str | ResolvedModel, *, with_hash: bool = True) -> dict[str, Any]:
    """The base's identity: as given (a local dir made absolute, or the Hub id), the Hub id and
    commit it derives from (a local base that carries one keeps it), and its hash (``with_hash``).

    Compute it once per run and pass it to :func:`common_manifest` for every member.
    """
    from boom_merge.model_refs import ResolvedModel, resolve_model

    resolved = base if isinstance(base, ResolvedModel) else resolve_model(base)
    base = resolved.spec
    hub_id, revision = resolved.hub_id, resolved.revision
    if hub_id is None:
        carried = hub_bases(resolved.path)
        hub_id = carried[0] if len(carried) == 1 else None
    return {
        "base_model": resolved.hub_id if resolved.revision else location(base),  # never a cache path
        "base_model_id": hub_id,
        "base_model_revision": revision,
    } | ({"base_model_sha256": model_sha256(resolved.path)} if with_hash else {})


def package_versions() -> dict[str, str]:
    """Versions of Python and of the packages that shape a trained model."""
    versions = {"python": platform.python_version()}
    for name in _VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def identity(manifest: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps({k: manifest.get(k) for k in _IDENTITY_KEYS}))


def common_manifest(
    kind: str, base: str, config: TrainConfig, seed: int, *, base_identity: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The keys every manifest has; ``base_identity``: :func:`base_record` of ``base`` if already computed."""
    return {
        "kind": kind,
        "format_version": FORMAT_VERSION,
        **(base_identity or base_record(base)),
        "seed": seed,
        "schedule": config.schedule,
        "training_args": asdict(config),
        "package_versions": package_versions(),
        "created": now(),
    }
