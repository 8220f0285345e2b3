"""Bagging samplers: which examples of each dataset a member trains on.

Owns: the bagging samplers, the ratio specs and the hash of a sample's ids. It never reads or
writes files.

Each dataset is subsampled on its own (the paper's per-dataset sampling), so every
member keeps the mix of tasks. Three modes:

* ``without_replacement``: ``round(ratio * n)`` distinct examples per dataset;
* ``bootstrap``: ``round(ratio * n)`` draws with replacement (classical bagging);
* ``complement``: two members share one permutation and split it, so their samples
  are disjoint and together cover each dataset (ratio spec ``"50,R"``).

Sampling is seeded per (seed, dataset name), so it is deterministic, and adding a
dataset does not change the samples drawn from the others.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from boom_merge.errors import BoomError

Mode = Literal["without_replacement", "bootstrap", "complement"]
SAMPLING_CHOICES: tuple[str, ...] = ("without_replacement", "bootstrap")

#: The two ratio sets studied in the paper, in percent.
PRESETS: dict[str, tuple[int, ...]] = {"paper4": (40, 60, 80, 100), "paper5": (20, 40, 60, 80, 100)}


@dataclass(frozen=True)
class MemberSpec:
    """What one member trains on: its sample ratio, seeds and sampling mode.

    ``seed`` differs between members (it seeds training); ``sample_seed`` seeds the
    sample and is shared by the two halves of a complement pair, which take
    ``part`` 0 and 1 of one permutation.
    """

    index: int
    ratio: float
    seed: int
    sample_seed: int
    mode: Mode
    part: int = 0

    @property
    def name(self) -> str:
        """Directory name ``member-I-rRR`` (RR = ratio in percent)."""
        return f"member-{self.index}-r{round(self.ratio * 100)}"


def _percent(token: str, spec: str) -> float:
    try:
        value = float(token)
    except ValueError:
        raise BoomError(f"ratio {token!r} in {spec!r} is not a number") from None
    if not 0 < value <= 100:
        raise BoomError(f"ratio {token!r} in {spec!r} must be a percentage in (0, 100]")
    return value / 100


def parse_ratios(spec: str) -> tuple[list[float], bool]:
    """Parse a ratio spec into member ratios (fractions) and whether it is a complement pair.

    Accepted: ``"40,60,80,100"`` (percent), presets ``"paper4"``/``"paper5"``, and
    ``"P,R"`` (a complement pair: P percent and the rest, disjoint).
    """
    spec = spec.strip()
    if spec in PRESETS:
        return [p / 100 for p in PRESETS[spec]], False
    tokens = [t.strip() for t in spec.split(",")]
    if not spec or any(not t for t in tokens):
        raise BoomError(f"empty ratio in {spec!r}; expected e.g. '40,60,80,100', 'paper4', 'paper5' or '50,R'")
    if tokens[-1].upper() == "R":
        if len(tokens) != 2:
            raise BoomError(f"complement spec {spec!r} must be 'P,R' (one percentage, then R)")
        first = _percent(tokens[0], spec)
        if first >= 1:
            raise BoomError(f"complement spec {spec!r} leaves nothing for R")
        return [first, 1 - first], True
    return [_percent(t, spec) for t in tokens], False


def plan_members(spec: str, *, seed: int, sampling: str = "without_replacement") -> list[MemberSpec]:
    """One :class:`MemberSpec` per ratio of ``spec``; member ``i`` gets seed ``seed + i``."""
    if sampling not in SAMPLING_CHOICES:
        raise BoomError(f"sampling must be one of {SAMPLING_CHOICES}, got {sampling!r}")
    ratios, complement = parse_ratios(spec)
    if complement and sampling != "without_replacement":
        raise BoomError(f"complement spec {spec!r} cannot be combined with {sampling} sampling")
    mode: Mode = "complement" if complement else sampling  # type: ignore[assignment]
    return [
        MemberSpec(
            index=i,
            ratio=r,
            seed=seed + i,
            sample_seed=seed if complement else seed + i,
            mode=mode,
            part=i if complement else 0,
        )
        for i, r in enumerate(ratios)
    ]


def sample_count(size: int, ratio: float) -> int:
    """Examples drawn from a dataset of ``size``: ``round(ratio * size)``, halves up, at least 1."""
    return min(size, max(1, math.floor(ratio * size + 0.5))) if size else 0


def _rng(seed: int, name: str) -> np.random.Generator:
    name_key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big")
    return np.random.default_rng([seed, name_key])


def _one_dataset(size: int, ratio: float, rng: np.random.Generator, mode: Mode, part: int) -> list[int]:
    if mode == "bootstrap":
        return sorted(rng.integers(0, size, sample_count(size, ratio)).tolist())
    if mode == "complement":
        cut = math.floor(ratio * size + 0.5)
        order = rng.permutation(size)
        return sorted((order[:cut] if part == 0 else order[cut:]).tolist())
    if mode == "without_replacement":
        return sorted(rng.choice(size, sample_count(size, ratio), replace=False).tolist())
    raise BoomError(f"unknown sampling mode {mode!r}")


def sample_ids(
    sizes: Mapping[str, int], ratio: float, seed: int, mode: Mode = "without_replacement", part: int = 0
) -> dict[str, list[int]]:
    """Sorted positions drawn from each dataset (``sizes``: name -> number of examples).

    For ``complement``, ``ratio`` is the share of part 0 (the first ``round(ratio * n)``
    of a seeded permutation); ``part`` 1 gets the rest, with the same ``seed``.
    """
    if not 0 < ratio <= 1:
        raise BoomError(f"sample ratio must be in (0, 1], got {ratio}")
    return {name: _one_dataset(size, ratio, _rng(seed, name), mode, part) for name, size in sizes.items()}


def member_sample(spec: MemberSpec, sizes: Mapping[str, int]) -> dict[str, list[int]]:
    """The sample of one member (see :func:`sample_ids`)."""
    # a complement pair cuts one permutation at part 0's share
    ratio = round(1 - spec.ratio, 9) if spec.mode == "complement" and spec.part == 1 else spec.ratio
    return sample_ids(sizes, ratio, spec.sample_seed, spec.mode, spec.part)


def ids_sha256(ids: Iterable[int]) -> str:
    """sha256 of example ids in sample order, one decimal id per line."""
    return hashlib.sha256("".join(f"{i}\n" for i in ids).encode()).hexdigest()
