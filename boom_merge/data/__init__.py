"""Training and evaluation data: corpus builders (``boom_merge.data.corpora``), loaders, bagging samplers."""
