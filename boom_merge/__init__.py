"""boom-merge: bagging-based robust model merging (BOOM) for text-embedding models.

Kept import-free on purpose: ``boom_merge_hook.pth`` imports ``boom_merge._hook`` at
every interpreter start-up, so nothing heavy (torch, mergekit) may load here.
"""

__version__ = "0.1.0"
