"""The merge stage: recipe -> checks -> plan -> mergekit -> head -> lineage -> card.

Owns: nothing itself (its modules do: ``recipes`` reads and validates a recipe,
``recipe_writing`` writes recipes for members, ``checks`` checks the inputs' safetensors,
``pipeline`` runs the one merge pipeline, ``methods`` holds the BOOM kernels,
``st_head`` the sentence-transformers head, ``mergekit_compat`` the mergekit 0.1.5 fixes).
It never imports its submodules: the hook imports ``methods`` at mergekit's start.
"""
