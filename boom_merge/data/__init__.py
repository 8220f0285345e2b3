"""Training and evaluation data: corpus builders (``boom_merge.data.corpora``), loaders, bagging samplers.

Owns: the data stage, the first one: corpora, loading training files, bagging samples. It may
not import training, merging, tuning, evaluation or the CLI, and it writes only corpus
directories (through :mod:`boom_merge.outputs`) and the downloads cache.
"""
