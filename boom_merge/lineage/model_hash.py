"""The model hash, computed once per model state: sha256 over the relative paths and contents of its files.

Owns: :func:`model_sha256` (the one model hash) and its cache. It imports nothing of boom-merge but
:mod:`boom_merge.model_refs` and :mod:`boom_merge.cache_dir`.

Hashing reads every byte (7.5 GiB for a 4B model), and the same model is hashed again and again:
the base of every member trained from it, every model ``eval`` records, the old model of an
update. A hash is therefore kept under ``cache_root()/hashes``, keyed by the model's resolved
path and each file's relative path, size, mtime, ctime and inode: any write to a file changes
its ctime, so an edited, added or removed file is a new key and is hashed afresh. A hash is not
kept when a file changed while it was read, or was written less than :data:`RACY_SECONDS` before
(a second write within the same timestamp tick would go unseen, as in git's "racy" files). The
cache is an optimisation only: an unreadable, corrupt or unwritable entry means hashing again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from pathlib import Path

from boom_merge.cache_dir import cache_root

logger = logging.getLogger(__name__)

#: a file written this recently (seconds) when hashing starts is hashed but its model's hash not kept
RACY_SECONDS = 2.0
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


def model_sha256(model: str | Path) -> str:
    """The model hash: sha256 over the relative paths and contents of its (non-hidden) files.

    A Hub id is resolved first (:func:`boom_merge.model_refs.resolve_model`); a hash of the same
    files, unchanged, comes from the cache (module docstring).
    """
    from tqdm.auto import tqdm

    from boom_merge.model_refs import resolve_model

    resolved = resolve_model(model)
    path = resolved.path
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    started = time.time()
    state = _state(path, files)
    entry = _entry(path, state)
    cached = _read(entry)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    for file in tqdm(files, desc=f"hashing {resolved.hub_id or path.name}", leave=False, unit="file"):
        digest.update(f"{file.relative_to(path).as_posix()}\n".encode())
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 24), b""):
                digest.update(chunk)
    value = digest.hexdigest()
    newest = max((mtime for _, _, mtime, _, _ in state), default=0) / 1e9
    if newest < started - RACY_SECONDS and _state(path, files) == state:
        _write(entry, value)
    return value


def _state(path: Path, files: list[Path]) -> list[tuple[str, int, int, int, int]]:
    """Each file's relative path, size, mtime, ctime (ns) and inode (symlinks followed)."""
    stats = [(file.relative_to(path).as_posix(), file.stat()) for file in files]
    return [(name, s.st_size, s.st_mtime_ns, s.st_ctime_ns, s.st_ino) for name, s in stats]


def _entry(path: Path, state: list) -> Path:
    key = hashlib.sha256(json.dumps([str(path.resolve()), state]).encode()).hexdigest()
    return cache_root() / "hashes" / key[:2] / key


def _read(entry: Path) -> str | None:
    try:
        value = entry.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return value if _DIGEST.match(value) else None


def _write(entry: Path, value: str) -> None:
    temporary = entry.with_name(f".{entry.name}.{os.getpid()}")
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_text(value + "\n", encoding="ascii")
        os.replace(temporary, entry)
    except OSError as error:
        logger.debug("model hash not cached at %s: %s", entry, error)
        try:
            temporary.unlink(missing_ok=True)
        except OSError:  # its folder is not there to hold it
            pass
