"""boom-merge: bagging-based robust model merging (BOOM) for text-embedding models.

Owns: the package's name and ``__version__``. It may not import anything, not even its own
submodules: the hook loads it at every start-up.

Kept import-free on purpose: ``boom_merge_hook.pth`` imports ``boom_merge._hook`` at
every interpreter start-up, so nothing heavy (torch, mergekit) may load here.
"""

__version__ = "0.1.0"
