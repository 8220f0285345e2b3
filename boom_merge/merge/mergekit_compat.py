"""The one place where boom-merge adapts mergekit 0.1.5. Each fix here is temporary.

Owns: every patch of mergekit 0.1.5. It may not check or write a merge itself: the checks and
outputs are :mod:`boom_merge.merge.pipeline`'s, the recipe rules :mod:`boom_merge.merge.recipes`'.

1. ``MergePlanner.plan_tensor`` evaluates ``[w_in.name] + (w_in.aliases or [])`` for
   optional weights; ``aliases`` is a tuple, so every BERT-family model (whose
   optional pooler weights have aliases) crashes with ``TypeError: can only
   concatenate list (not "tuple") to list``. ``plan_tensor`` is wrapped so that the
   weights it is given carry their aliases as :class:`ListConcatenableAliases`: still
   the same (hashable, equal) tuple, which a list can also be added to. mergekit's own
   code runs unchanged. ``tests/test_mergekit_compat.py`` fails when upstream fixes it.
   The same wrapper leaves out an optional weight that the output's model class neither
   saves nor loads (:mod:`boom_merge.model_class`): mergekit writes any optional weight one
   input has, so a Hub base saved by transformers 4.x put its ``embeddings.position_ids``
   into a merge of members trained today, which lack it.
2. mergekit's model card asks the Hub whether a local directory whose path has at
   most one slash (``members/m0``) is also a Hub repo; offline that raises a
   connection error after the merge is done. A path that is a local directory is
   treated as local.
3. Plain ``mergekit-yaml`` goes through boom-merge's merge pipeline
   (:mod:`boom_merge.merge.pipeline`): ``run_merge`` is wrapped so that it runs the pipeline's
   checks first and finishes the output after (:func:`boom_merge.merge.pipeline.merge_in_place`),
   and every command built with ``add_merge_options`` (``mergekit-yaml`` among them)
   validates its recipe file strictly and prints a refusal as one ``Error:`` line
   (exit 1) instead of a traceback.
4. mergekit keeps every model's tensor loader (its shard index and an open safetensors handle)
   in a class-level ``LoaderCache`` for the life of the process, so a second merge in the same
   process (tune, ``--update-weight auto``, a notebook) read a model whose files changed since
   through the old header's offsets: garbage, NaN. Each run gets fresh loaders
   (``tests/test_fuzz.py``, the rewritten-input regression case).

The import hook (``_hook.py``) applies each right after mergekit's module has been
executed; all are idempotent and marked with ``__boom_merge_patched__``. This module
owns the adaptations only: what the pipeline checks and writes lives in merging.py.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any, Callable

logger = logging.getLogger(__name__)
_PATCHED = "__boom_merge_patched__"


def _mark(function: Callable[..., Any]) -> Callable[..., Any]:
    setattr(function, _PATCHED, True)
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
    from boom_merge.model_class import load_rule

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
    if getattr(original, _PATCHED, False):
        return

    @functools.wraps(original)
    def plan_tensor(self, weight, weights_in, models, cfg_reader):
        if _unloaded(getattr(self, "out_model_config", None), weight):
            return None
        return original(self, weight, [_concatenable(w) for w in weights_in], models, cfg_reader)

    MergePlanner.plan_tensor = _mark(plan_tensor)


def treat_local_dirs_as_local() -> None:
    """Wrap ``mergekit.card.is_hf`` so that existing local directories never query the Hub."""
    import mergekit.card as card

    original = card.is_hf
    if getattr(original, _PATCHED, False):
        return

    @functools.wraps(original)
    def is_hf(path: str) -> bool:
        return False if os.path.isdir(path) else original(path)

    card.is_hf = _mark(is_hf)


def upstream_run_merge() -> Callable[..., Any]:
    """mergekit's own ``run_merge``, whether or not it is wrapped (with fresh loaders, fix 4)."""
    import mergekit.merge as merge

    return _fresh_loaders(getattr(merge.run_merge, "__wrapped__", merge.run_merge))


def _fresh_loaders(run: Callable[..., Any]) -> Callable[..., Any]:
    """``run`` with mergekit's tensor loaders forgotten before and after it (fix 4)."""

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


def route_run_merge() -> None:
    """Make ``mergekit.merge.run_merge`` run boom-merge's checks before and its finish after."""
    import mergekit.merge as merge

    original = merge.run_merge
    if getattr(original, _PATCHED, False):
        return

    @functools.wraps(original)
    def run_merge(merge_config, out_path, options=None, config_source=None):
        from boom_merge.merge.pipeline import merge_in_place

        return merge_in_place(merge_config, out_path, options=options, config_source=config_source,
                              upstream=_fresh_loaders(original))

    merge.run_merge = _mark(run_merge)


def one_line_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """A mergekit command body whose refusals are one ``Error:`` line, exit 1.

    For ``mergekit-yaml`` (``config_file`` and ``out_path`` arguments) the recipe is also
    validated strictly first, naming the recipe file.
    """
    if getattr(command, _PATCHED, False):
        return command

    @functools.wraps(command)
    def guarded(*args, **kwargs):
        import click

        from boom_merge.errors import BoomError

        try:
            if "config_file" in kwargs and "out_path" in kwargs:
                from boom_merge.merge.recipes import load_recipe

                load_recipe(kwargs["config_file"])
            return command(*args, **kwargs)
        except BoomError as error:
            raise click.ClickException(str(error)) from None

    return _mark(guarded)


def guard_merge_commands() -> None:
    """Wrap ``mergekit.options.add_merge_options`` so the commands it builds use :func:`one_line_errors`."""
    import mergekit.options as options

    original = options.add_merge_options
    if getattr(original, _PATCHED, False):
        return

    @functools.wraps(original)
    def add_merge_options(f: Callable[..., Any]) -> Callable[..., Any]:
        return original(one_line_errors(f))

    options.add_merge_options = _mark(add_merge_options)


def apply_plan_fixes() -> None:
    """Callback for ``mergekit.plan``."""
    fix_plan_tensor()


def apply_card_fixes() -> None:
    """Callback for ``mergekit.card``."""
    treat_local_dirs_as_local()


def apply_merge_fixes() -> None:
    """Callback for ``mergekit.merge``."""
    route_run_merge()


def apply_cli_fixes() -> None:
    """Callback for ``mergekit.options``."""
    guard_merge_commands()


def ensure_applied() -> None:
    """What boom-merge's own merges need, also with the hook disabled: methods, BERT fix, card fix."""
    from boom_merge.merge.methods import register_methods

    register_methods()
    fix_plan_tensor()
    treat_local_dirs_as_local()
