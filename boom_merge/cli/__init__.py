"""The ``boom-merge`` command line: a thin click layer over the library.

Owns: the ``boom-merge`` group (``--version``, ``--verbose``, logging set-up), collecting each
module's ``COMMANDS``, and turning a :class:`BoomError` into one line and exit status 1. It may
not hold pipeline logic, and no library module imports this package.

Each module in this package defines the commands of one pipeline stage and lists
them in ``COMMANDS``; they are collected here so that stages stay independent.
Commands import heavy libraries (torch, mergekit) inside their bodies, which keeps
``boom-merge --help`` fast.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from typing import Any

import click

from boom_merge import __version__
from boom_merge.errors import BoomError


class _Group(click.Group):
    """Turns :class:`BoomError` into a one-line message and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BoomError as error:
            raise click.ClickException(str(error)) from None


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="boom-merge")
@click.option("-v", "--verbose", is_flag=True, help="Log progress details.")
def main(verbose: bool) -> None:
    """BOOM: train bagged embedding members, merge them into one model, update it."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


def _register_commands() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):  # __main__ runs the CLI; it defines no commands
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for command in getattr(module, "COMMANDS", ()):
            main.add_command(command)


_register_commands()
