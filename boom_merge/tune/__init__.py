"""``boom-merge tune``: choose merge settings on dev splits, never on test data.

Owns: the ``tune`` stage's public names.

- :mod:`.candidates`: one ``boom`` recipe per candidate (members, interpolation, weights, scale);
- :mod:`.select`: the selection rule and the greedy soup (pure functions over scores);
- :mod:`.devset`: the dev data held once per search (tasks, the racing slice, tokenization);
- :mod:`.scoring`: which dev splits judge, and the MTEB scorer;
- :mod:`.race`: the racing margin and rule (pure functions over slice scores);
- :mod:`.run`: the search, racing, the cache, the outputs (:func:`tune`);
- :mod:`.report`: ``candidates.json`` / ``.md`` and ``pareto.png``.
"""

from __future__ import annotations

from boom_merge.tune.candidates import DEFAULT_SCALES, Candidate, candidate
from boom_merge.tune.run import DEFAULT_MAX_CORPUS, DEFAULT_MAX_QUERIES, TuneResult, tune
from boom_merge.tune.select import OBJECTIVES, Scores, choose, greedy_soup, selection_rule

__all__ = [
    "DEFAULT_MAX_CORPUS", "DEFAULT_MAX_QUERIES", "DEFAULT_SCALES", "OBJECTIVES", "Candidate", "Scores",
    "TuneResult", "candidate", "choose", "greedy_soup", "selection_rule", "tune",
]
