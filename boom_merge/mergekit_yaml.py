"""Plain ``mergekit-yaml`` through boom-merge's merge pipeline (named in the hook's callbacks).

Owns: mergekit's ``run_merge`` wrapped to run :func:`boom_merge.merge.pipeline.merge_in_place`,
and the commands built with ``add_merge_options`` checking their recipe strictly, refusing in
one ``Error:`` line. Nothing in boom_merge imports it; it never checks or writes a merge itself.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from boom_merge.merge.mergekit_compat import PATCHED, fresh_loaders, mark_patched


def route_run_merge() -> None:
    """Make ``mergekit.merge.run_merge`` run boom-merge's checks before and its finish after."""
    import mergekit.merge as merge

    original = merge.run_merge
    if getattr(original, PATCHED, False):
        return

    @functools.wraps(original)
    def run_merge(merge_config, out_path, options=None, config_source=None):
        from boom_merge.merge.pipeline import merge_in_place

        return merge_in_place(merge_config, out_path, options=options, config_source=config_source,
                              upstream=fresh_loaders(original))

    merge.run_merge = mark_patched(run_merge)


def one_line_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """A mergekit command body whose refusals are one ``Error:`` line, exit 1.

    For ``mergekit-yaml`` (``config_file`` and ``out_path`` arguments) the recipe is also
    validated strictly first, naming the recipe file.
    """
    if getattr(command, PATCHED, False):
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

    return mark_patched(guarded)


def guard_merge_commands() -> None:
    """Wrap ``mergekit.options.add_merge_options`` so the commands it builds use :func:`one_line_errors`."""
    import mergekit.options as options

    original = options.add_merge_options
    if getattr(original, PATCHED, False):
        return

    @functools.wraps(original)
    def add_merge_options(f: Callable[..., Any]) -> Callable[..., Any]:
        return original(one_line_errors(f))

    options.add_merge_options = mark_patched(add_merge_options)
