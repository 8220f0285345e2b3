"""The model card: ``build`` (the one builder: sentence-transformers' card + BOOM's sections),
``body`` (BOOM's Markdown sections), ``scores`` (evaluation scores and ``model-index``).

Owns: nothing itself; it never imports its submodules.
"""
