"""The one place where boom-merge fixes mergekit 0.1.5's bugs. Each fix here is temporary.

Owns: the fixes of mergekit 0.1.5 (BERT aliases, offline card) and the patch marker. Of boom-merge it
imports only :mod:`boom_merge.merge.model_class` (which imports none of it) and it may not check or write a merge: the pipeline
(:mod:`boom_merge.merge.pipeline`) applies these fixes before it runs mergekit, and plain
``mergekit-yaml`` is routed through that pipeline by :mod:`boom_merge.mergekit_yaml`.

1. ``MergePlanner.plan_tensor`` evaluates ``[w_in.name] + (w_in.aliases or [])`` for
   optional weights; ``aliases`` is a tuple, so every BERT-family model (whose
   optional pooler weights have aliases) crashes with ``TypeError: can only
   concatenate list (not "tuple") to list``. ``plan_tensor`` is wrapped so that the
   weights it is given carry their aliases as :class:`ListConcatenableAliases`: still
   the same (hashable, equal) tuple, which a list can also be added to. mergekit's own
   code runs unchanged. ``tests/test_mergekit_compat.py`` fails when upstream fixes it.
   The same wrapper leaves out an optional weight that the output's model class neither
   saves nor loads (:mod:`boom_merge.merge.model_class`): mergekit writes any optional weight one
   input has, so a Hub base saved by transformers 4.x put its ``embeddings.position_ids``
   into a merge of members trained today, which lack it.
2. mergekit's model card asks the Hub whether a local directory whose path has at
   most one slash (``members/m0``) is also a Hub repo; offline that raises a
   connection error after the merge is done. A path that is a local directory is
   treated as local.
3. mergekit keeps every model's tensor loader (its shard index and an open safetensors handle)
   in a class-level ``LoaderCache`` for the life of the process, so a second merge in the same
   process (tune, ``--update-weight auto``, a notebook) read a model whose files changed since
   through the old header's offsets: garbage, NaN. Each run gets fresh loaders
   (:func:`fresh_loaders`; ``tests/test_fuzz.py``, the rewritten-input regression case).

The import hook (``_hook.py``) applies each right after mergekit's module has been
executed, and the pipeline before each merge (also with the hook disabled); both are
idempotent and marked with ``__boom_merge_patched__``.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any, Callable

logger = logging.getLogger(__name__)
PATCHED = "__boom_merge_patched__"


def mark_patched(function: Callable[..., Any]) -> Callable[..., Any]:
    setattr(function, PATCHED, True)
    return function


class ListConcatenableAliases(tuple):
    """A tuple of weight aliases that ``[name] + aliases`` also accepts (mergekit 0.1.5's plan.py)."""

    __slots__ = ()

    def __radd__(self, other: Any) -> Any:
        if isinstance(other, list):
            return [*other, *self]
        return NotImplemented


def _concatenable(weight: Any) -> Any:
    aliases = getattr(weight, "aliases", None)
    if not aliases or isinstance(aliases, ListConcatenableAliases):
        return weight
    return weight.model_copy(update={"aliases": ListConcatenableAliases(aliases)})


def _unloaded(out_config: Any, weight: Any) -> bool:
    """An optional weight that the output's model class neither saves nor loads."""
    from boom_merge.merge.model_class import load_rule

    if not weight.optional or out_config is None:
        return False
    rule = load_rule(out_config)
    if rule is None or not rule.unloaded(weight.name):
        return False
    logger.info("leaving out %s: %s neither saves nor loads it", weight.name, rule.class_name)
    return True


def fix_plan_tensor() -> None:
    """Wrap ``MergePlanner.plan_tensor``: its inputs' aliases can be added to a list, and
    optional weights the output's class does not load are left out."""
    from mergekit.plan import MergePlanner

    original = MergePlanner.plan_tensor
    if getattr(original, PATCHED, False):
        return

    @functools.wraps(original)
    def plan_tensor(self, weight, weights_in, models, cfg_reader):
        if _unloaded(getattr(self, "out_model_config", None), weight):
            return None
        return original(self, weight, [_concatenable(w) for w in weights_in], models, cfg_reader)

    MergePlanner.plan_tensor = mark_patched(plan_tensor)


def treat_local_dirs_as_local() -> None:
    """Wrap ``mergekit.card.is_hf`` so that existing local directories never query the Hub."""
    import mergekit.card as card

    original = card.is_hf
    if getattr(original, PATCHED, False):
        return

    @functools.wraps(original)
    def is_hf(path: str) -> bool:
        return False if os.path.isdir(path) else original(path)

    card.is_hf = mark_patched(is_hf)


def upstream_run_merge() -> Callable[..., Any]:
    """mergekit's own ``run_merge``, whether or not it is wrapped (with fresh loaders, fix 4)."""
    import mergekit.merge as merge

    return fresh_loaders(getattr(merge.run_merge, "__wrapped__", merge.run_merge))


def fresh_loaders(run: Callable[..., Any]) -> Callable[..., Any]:
    """``run`` with mergekit's tensor loaders forgotten before and after it (fix 3)."""

    def forget() -> None:
        from mergekit.io.tasks import LoaderCache

        cache = LoaderCache()
        cache.flush_all()  # closes the open safetensors handles
        cache.loaders.clear()  # a class-level dict: every later merge in this process would share it

    @functools.wraps(run)
    def fresh(*args: Any, **kwargs: Any) -> Any:
        forget()
        try:
            return run(*args, **kwargs)
        finally:
            forget()

    return fresh
