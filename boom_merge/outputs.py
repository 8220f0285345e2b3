"""Atomic output directories: write into a temporary sibling, then move into place.

Every command that writes a model or dataset uses :func:`atomic_output_dir`, so an
error never leaves a half-written output and an existing output survives unless
``force`` is given.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from boom_merge.errors import BoomError


def refuse_existing(out: str | Path, force: bool) -> Path:
    """Return ``out`` as a Path; raise if it exists and ``force`` is not set."""
    out = Path(out)
    if out.exists() and not force:
        raise BoomError("output already exists; pass --force to replace it", path=out)
    return out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_output_dir(out: str | Path, *, force: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``out`` only if the block succeeds."""
    out = refuse_existing(out, force).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private (0700); outputs get the usual mode
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        out.rename(trash / out.name)
        tmp.rename(out)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        tmp.rename(out)
