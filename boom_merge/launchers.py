"""Kept for imports of earlier versions: the Ray launcher lives in :mod:`boom_merge.training.launchers`.

Owns: nothing but this old import path. It may not hold code.
"""

from __future__ import annotations

from boom_merge.training.launchers import ray_train_members

__all__ = ["ray_train_members"]
