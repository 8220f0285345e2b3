"""Evaluation through MTEB: local corpus tasks, summary tables, charts.

Owns: the evaluation stage: MTEB scores of models on the built corpus and standard tasks. It may
not train, merge or tune, and it never writes lineage (it reads it).

- :mod:`.corpus` reads the built corpus's test and dev splits;
- :mod:`.tasks` turns them into ``mteb`` tasks (and finds standard MTEB tasks and benchmarks);
- :mod:`.meta` builds the models' MTEB ``ModelMeta`` (``model_meta.json``);
- in-domain tagging reads the models' training datasets from :mod:`boom_merge.lineage`;
- :mod:`.summary` builds and renders the model x task table and chart;
- :mod:`.run` is ``boom-merge eval`` as a function: :func:`evaluate_models`.

Embedding drift between two models lives in :mod:`boom_merge.incremental.drift`.
"""

from __future__ import annotations

from boom_merge.evaluation.run import evaluate_models
from boom_merge.evaluation.summary import Summary, split_averages, to_markdown, to_text
from boom_merge.lineage import training_datasets

__all__ = ["Summary", "evaluate_models", "split_averages", "to_markdown", "to_text", "training_datasets"]
