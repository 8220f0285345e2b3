"""Tuning candidates: one ``boom`` recipe each (members, interpolation, weights, scale).

Owns: the candidate recipes and their keys. It never merges or scores.

Every candidate merges a subset of the members with the base as ``base_model``:
``base + t * merge(members - base)``. The base itself is the full-data member at t = 0,
a member alone is that member at t = 1 (bit for bit), the WiSE-FT line is the full-data
member at each t. Equal recipes share one key, so nothing is merged or scored twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from boom_merge.merge.recipe_writing import build_recipe

#: the default grid of ``scale`` (t) values; 1 is always included
DEFAULT_SCALES: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.25)
INTERPOLATIONS: tuple[str, ...] = ("slerp", "linear")
WEIGHT_SCHEMES: tuple[str, ...] = ("equal", "ratio")
_KINDS = ("base", "member", "wise_ft", "bag", "soup")


@dataclass(frozen=True)
class Candidate:
    """One recipe to score. ``members`` are indexes into the tuned member list (sorted).

    ``order`` is the candidate's place in the search (the last tie-breaker). Build
    candidates with :func:`candidate`, which normalises settings that do not matter.
    """

    kind: str
    members: tuple[int, ...]
    interpolation: str = "slerp"
    weights: str = "equal"
    scale: float = 1.0
    order: int = 0

    @property
    def key(self) -> str:
        """Identity of the merged model (the cache key): equal recipes, equal keys."""
        members = ",".join(map(str, self.members))
        return f"m={members}|{self.interpolation}|{self.weights}|t={self.scale:g}"

    @property
    def complexity(self) -> tuple:
        """Ties go to the smallest: scale 1, scale nearer 1, equal weights, more members, slerp, earlier."""
        return (self.scale != 1.0, abs(self.scale - 1.0), self.weights != "equal", -len(self.members),
                self.interpolation != "slerp", self.order)

    def describe(self, names: Sequence[str]) -> str:
        """A short human label, e.g. ``bag slerp ratio t=0.75``."""
        if self.kind == "base":
            return "base"
        chosen = "+".join(names[i] for i in self.members)
        if self.kind in ("member", "wise_ft"):
            return chosen if self.scale == 1.0 else f"WiSE-FT {chosen} t={self.scale:g}"
        return f"{self.kind} {self.interpolation} {self.weights} t={self.scale:g} [{chosen}]"


def candidate(
    kind: str, members: Sequence[int], *, interpolation: str = "slerp", weights: str = "equal",
    scale: float = 1.0, order: int = 0,
) -> Candidate:
    """A normalised candidate: one member ignores interpolation and weights."""
    if kind not in _KINDS:
        raise ValueError(f"unknown candidate kind {kind!r}")
    members = tuple(sorted(set(members)))
    if len(members) == 1:
        interpolation, weights = "slerp", "equal"
    return Candidate(kind, members, interpolation, weights, float(scale), order)


def recipe_of(cand: Candidate, members: Sequence[str], base: str) -> dict[str, Any]:
    """The mergekit recipe (a dict) of a candidate.

    ``members``/``base``: as recipes name them (:attr:`boom_merge.model_refs.ResolvedModel.recipe_name`:
    a local dir absolute, so the recipe runs from anywhere; a Hub id ``org/name@COMMIT``). It names no
    dtype: the merge pipeline's one rule (:func:`boom_merge.merge.pipeline.output_dtype`) keeps the
    members' stored dtype, so what is scored is what is written.
    """
    chosen = [members[i] for i in cand.members]
    method = "boom" if cand.interpolation == "slerp" else "boom_linear"
    recipe = build_recipe(chosen, method=method, weights=cand.weights, base=base)
    recipe["parameters"]["scale"] = cand.scale
    return recipe


def recipe_text(cand: Candidate, members: Sequence[str], base: str, header: str = "") -> str:
    """The recipe as YAML, after ``header`` (comment lines)."""
    formula = (
        "# output = base + scale * merge(members - base); merge: "
        + ("Multi-SLERP" if cand.interpolation == "slerp" else "weighted average")
        + f" of the members' deltas, {cand.weights} weights\n"
    )
    return header + formula + yaml.safe_dump(recipe_of(cand, members, base), sort_keys=False)
