"""Manifest pieces: model hashes, package versions, run identity."""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Mapping
from dataclasses import asdict
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from boom_merge.errors import BoomError
from boom_merge.lineage import MEMBER_FILE
from boom_merge.training.config import TrainConfig

MANIFEST_NAME = MEMBER_FILE
_VERSIONED_PACKAGES = ("boom-merge", "torch", "transformers", "sentence-transformers", "datasets", "accelerate", "peft")
# keys that say whether a finished member (or checkpoints) belong to the run a command asks for
_IDENTITY_KEYS = ("kind", "base_model_sha256", "datasets", "training_args", "schedule", "seed", "mode", "sample_ratio")


def model_sha256(model: str | Path) -> str:
    """sha256 over the relative paths and contents of a model directory's files.

    A Hub id is resolved to its local snapshot (the Hub itself is never contacted).
    """
    path = Path(model)
    if not path.is_dir():
        from huggingface_hub import snapshot_download

        try:
            path = Path(snapshot_download(str(model), local_files_only=True))
        except Exception:  # noqa: BLE001 - any failure means "not available locally"
            raise BoomError("model not found: not a directory nor a locally cached Hub model", path=model) from None
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
        digest.update(f"{file.relative_to(path).as_posix()}\n".encode())
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


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


def location(path: str | Path) -> str:
    """An existing local path made absolute (manifests outlive the working directory); else as given."""
    return str(Path(path).resolve()) if Path(path).exists() else str(path)


def common_manifest(kind: str, base: str, config: TrainConfig, seed: int) -> dict[str, Any]:
    return {
        "kind": kind,
        "format_version": 1,
        "base_model": location(base),
        "base_model_sha256": model_sha256(base),
        "seed": seed,
        "schedule": config.schedule,
        "training_args": asdict(config),
        "package_versions": package_versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
