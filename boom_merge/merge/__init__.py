"""The merge stage: recipe -> checks -> plan -> mergekit -> head -> lineage -> card.

Owns: nothing itself (``recipes``, ``recipe_writing``, ``checks``, ``pipeline``, ``methods``,
``st_head``, ``mergekit_compat`` do); it never imports them.
"""
