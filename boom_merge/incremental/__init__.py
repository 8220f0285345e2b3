"""Incremental updates. Owns: nothing itself (``update``, ``update_weight``, ``drift``, ``adapter`` do);
it never imports them.
"""
