"""Incremental updates: ``update`` (interpolate or add, with lineage), ``update_weight``
(``--update-weight auto``), ``drift`` (how far an update moved the embeddings),
``adapter`` (query adapters NEW -> OLD).

Owns: nothing itself; it never imports its submodules.
"""
