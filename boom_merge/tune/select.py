"""The selection rule and the greedy soup, as pure functions over scores.

Owns: the selection rule and the greedy soup. It never merges, scores or touches files.

The rule is fixed before anything is scored (:func:`selection_rule` says it in words):
the objective (``balanced``: mean of the ID-dev and OOD-dev averages; ``id``; ``ood``)
is maximised over every scored candidate, and ties go to the simpler candidate
(:attr:`Candidate.complexity <boom_merge.tune.candidates.Candidate.complexity>`).
:func:`greedy_soup` is Wortsman et al. (2022): members in order of their own dev score,
each added to the soup only if the soup's dev score improves.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from boom_merge.errors import BoomError
from boom_merge.tune.candidates import Candidate

Objective = Literal["balanced", "id", "ood"]
OBJECTIVES: tuple[str, ...] = ("balanced", "id", "ood")
#: objective values closer than this count as a tie
TIE = 1e-9

_OBJECTIVE_TEXT = {
    "balanced": "the mean of the ID-dev and OOD-dev averages",
    "id": "the ID-dev average (dev splits of the training domains)",
    "ood": "the OOD-dev average (dev splits of the OOD dev sources)",
}

T = TypeVar("T")


@dataclass(frozen=True)
class Scores:
    """Dev scores of one candidate: the two averages and the main score of every task.

    ``per_query``: side (``id`` / ``ood``) -> task -> query id -> score, for racing margins;
    ``profile``: seconds per part of the scoring (:class:`boom_merge.tune.scoring.DevScorer`).
    """

    id_dev: float | None
    ood_dev: float | None
    tasks: dict[str, float] = field(default_factory=dict)
    per_query: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    profile: dict[str, float] = field(default_factory=dict)


def selection_rule(objective: Objective) -> str:
    """The rule in words, printed before scoring."""
    if objective not in OBJECTIVES:
        raise BoomError(f"unknown objective {objective!r}; valid: {', '.join(OBJECTIVES)}")
    return (
        f"selection rule ({objective}, fixed before scoring): maximise {_OBJECTIVE_TEXT[objective]} "
        "over all candidates, dev splits only; ties go to the simpler candidate "
        "(scale 1, then scale nearer 1, equal weights, more members, slerp, earlier in the grid)"
    )


def objective_value(scores: Scores, objective: Objective) -> float:
    """The number the rule maximises; BoomError when a needed average is missing."""
    needed = {"balanced": (scores.id_dev, scores.ood_dev), "id": (scores.id_dev,), "ood": (scores.ood_dev,)}[objective]
    if any(value is None or math.isnan(value) for value in needed):
        raise BoomError(f"objective {objective} needs ID-dev and OOD-dev scores; a dev average is missing")
    return sum(needed) / len(needed)  # type: ignore[arg-type]


def choose(scored: Sequence[tuple[Candidate, Scores]], objective: Objective) -> Candidate:
    """The candidate the rule selects from ``(candidate, scores)`` pairs."""
    if not scored:
        raise BoomError("no candidate was scored")
    values = [(candidate, objective_value(scores, objective)) for candidate, scores in scored]
    top = max(value for _, value in values)
    tied = [candidate for candidate, value in values if value >= top - TIE]
    return min(tied, key=lambda candidate: candidate.complexity)


@dataclass(frozen=True)
class SoupStep:
    """One greedy-soup trial: the soup with the next member added, its score, and whether it stayed."""

    members: tuple
    score: float
    kept: bool


def greedy_soup(
    members: Sequence[T],
    member_score: Callable[[T], float],
    soup_score: Callable[[tuple[T, ...]], float],
    improves: Callable[[tuple[T, ...], tuple[T, ...]], bool] | None = None,
) -> tuple[tuple[T, ...], list[SoupStep]]:
    """Greedy soup: start from the best member; add each next-best member if the soup's score rises.

    ``member_score`` scores one member alone, ``soup_score`` a soup of two or more (in the
    order they were added). ``improves(trial, soup)``, when given, decides whether a trial beats
    the soup so far (racing decides on full scores where the slice cannot tell them apart).
    Returns the final soup and every trial in order.
    """
    if not members:
        raise BoomError("a greedy soup needs at least one member")
    own = {index: member_score(member) for index, member in enumerate(members)}
    order = sorted(own, key=lambda index: -own[index])  # stable: ties keep the given order
    soup = (members[order[0]],)
    best = own[order[0]]
    steps = []
    for index in order[1:]:
        trial = (*soup, members[index])
        score = soup_score(trial)
        kept = improves(trial, soup) if improves else score > best
        steps.append(SoupStep(trial, score, kept))
        if kept:
            soup, best = trial, score
    return soup, steps
