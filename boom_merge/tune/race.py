"""Racing: which candidates a cheap slice score already rules out, as pure functions over scores.

Owns: the racing margin and the racing rule. It never merges, scores or touches files.

Every candidate is first scored on a small fixed slice of each dev source
(:class:`boom_merge.tune.devset.SliceSpec`). The leader is the candidate with the best slice
objective. A candidate is raced out (never scored on the full caps) only when all hold:

- its slice objective is behind the leader's by more than the margin, ``z`` times the standard
  error of the paired difference: the objective is a weighted mean of per-query scores
  (balanced: half the mean of the ID tasks, half that of the OOD tasks; each task the mean of
  its queries), so the difference of two candidates on the same queries has variance
  ``sum over tasks of weight**2 * var(per-query differences) / queries``;
- it is not in the top third by slice objective (``keep``);
- it is not protected: the base, the plain bag (all members, slerp, equal weights, t = 1) and
  the best WiSE-FT point (the full-data member at the best slice objective).

The slice scores query sampling only: the slice also holds fewer documents, which makes every
candidate's task easier alike; the paired difference is what is compared.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import variance

from boom_merge.tune.candidates import Candidate
from boom_merge.tune.select import Objective, Scores, objective_value

#: z of the racing margin: a candidate is dropped when behind by more than z standard errors
DEFAULT_Z = 2.0
#: the share of candidates (best slice objective first) that always go on to the full caps
DEFAULT_KEEP = 1 / 3
_SIDE_WEIGHT = {"balanced": {"id": 0.5, "ood": 0.5}, "id": {"id": 1.0}, "ood": {"ood": 1.0}}


@dataclass(frozen=True)
class RaceMark:
    """A candidate's racing outcome: behind the leader by ``behind`` (objective, slice), ``margin``."""

    kept: bool
    behind: float
    margin: float
    reason: str


def paired_margin(leader: Scores, other: Scores, objective: Objective, z: float = DEFAULT_Z) -> float:
    """``z`` x the standard error of ``objective(leader) - objective(other)`` from per-query scores.

    Tasks or queries that only one side has add nothing (0 when no per-query scores are given).
    """
    var = 0.0
    for side, weight in _SIDE_WEIGHT[objective].items():
        tasks = leader.per_query.get(side, {})
        for task, per_query in tasks.items():
            theirs = other.per_query.get(side, {}).get(task, {})
            diffs = [per_query[q] - theirs[q] for q in per_query if q in theirs]
            if len(diffs) > 1:
                var += (weight / len(tasks)) ** 2 * variance(diffs) / len(diffs)
    return z * math.sqrt(var)


def droppable(candidates: int, guarded: int, keep: float = DEFAULT_KEEP) -> int:
    """The most of ``candidates`` that :func:`race` can drop with ``guarded`` of them guarded: it keeps
    the top ``keep`` share (at least the leader) and the guarded, who may all be in the top."""
    return max(0, candidates - max(math.ceil(keep * candidates), 1, guarded))


def protected(slice_scored: Sequence[tuple[Candidate, Scores]], objective: Objective, members: int,
              full: int) -> dict[str, str]:
    """Keys of the candidates that always reach the full caps, with why."""
    keep: dict[str, str] = {}
    wise = [(c, s) for c, s in slice_scored if c.members == (full,) and c.scale > 0]
    for cand, _ in slice_scored:
        if cand.kind == "base":
            keep[cand.key] = "the base"
        elif cand.kind == "bag" and len(cand.members) == members and cand.interpolation == "slerp" \
                and cand.weights == "equal" and cand.scale == 1.0:
            keep[cand.key] = "the plain bag"
    if wise:
        best = max(wise, key=lambda p: (objective_value(p[1], objective), -p[0].order))[0]
        keep.setdefault(best.key, "the best WiSE-FT point")
    return keep


def race(slice_scored: Sequence[tuple[Candidate, Scores]], objective: Objective, *, z: float = DEFAULT_Z,
         keep: float = DEFAULT_KEEP, guarded: dict[str, str] | None = None) -> dict[str, RaceMark]:
    """The racing outcome of every candidate (by key) from its slice scores (module docstring).

    ``keep``: the share always kept (best first); ``guarded``: keys always kept, with why.
    """
    values = {c.key: objective_value(s, objective) for c, s in slice_scored}
    ranked = sorted(slice_scored, key=lambda p: (-values[p[0].key], p[0].complexity))
    leader_cand, leader = ranked[0]
    n_top = math.ceil(keep * len(ranked))
    top = {c.key for c, _ in ranked[:n_top]}
    marks = {}
    for cand, scores in slice_scored:
        behind = values[leader_cand.key] - values[cand.key]
        margin = paired_margin(leader, scores, objective, z)
        if cand.key == leader_cand.key:
            reason = "the slice leader"
        elif cand.key in top:
            reason = f"top {n_top} on the slice"
        elif cand.key in (guarded or {}):
            reason = (guarded or {})[cand.key]
        elif behind <= margin:
            reason = "within the margin"
        else:
            marks[cand.key] = RaceMark(False, behind, margin, "behind by more than the margin")
            continue
        marks[cand.key] = RaceMark(True, behind, margin, reason)
    return marks
