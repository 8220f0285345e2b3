"""Where boom-merge keeps its caches.

Owns: :func:`cache_root` (``$BOOM_MERGE_CACHE``, else ``$XDG_CACHE_HOME/boom-merge``, else
``~/.cache/boom-merge``): corpora and their downloads (:mod:`boom_merge.data`) and model hashes
(:mod:`boom_merge.lineage.model_hash`) live under it. It imports nothing.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$BOOM_MERGE_CACHE``, else ``~/.cache/boom-merge`` (``$XDG_CACHE_HOME`` respected)."""
    if os.environ.get("BOOM_MERGE_CACHE"):
        return Path(os.environ["BOOM_MERGE_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "boom-merge"
