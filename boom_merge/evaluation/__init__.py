"""Evaluation through MTEB: local corpus tasks, summary tables, charts.

- :mod:`.corpus` reads the built corpus's test splits;
- :mod:`.tasks` turns them into ``mteb`` tasks (and finds standard MTEB tasks);
- :mod:`.lineage` reads which datasets a model was trained on (in-domain tagging);
- :mod:`.summary` builds and renders the model x task table and chart;
- :mod:`.run` is ``boom-merge eval`` as a function: :func:`evaluate_models`.

Embedding drift between two models lives in :mod:`boom_merge.drift`.
"""

from __future__ import annotations

from boom_merge.evaluation.lineage import training_datasets
from boom_merge.evaluation.run import evaluate_models
from boom_merge.evaluation.summary import Summary, to_markdown, to_text

__all__ = ["Summary", "evaluate_models", "to_markdown", "to_text", "training_datasets"]
