"""Options shared by commands of several stages (``--device``); not a stage, registers no commands.

Owns: the ``--device`` option, reading repeatable comma-list options and a library function's
default for an option. It may not define
commands or call the library.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import click

device_option = click.option(
    "--device", default=None, metavar="DEVICE",
    help="Torch device: cuda, cuda:1, cpu, mps (default: cuda when available, else cpu).",
)


def comma_names(value: tuple[str, ...]) -> list[str] | None:
    """Comma lists from a repeatable option, flattened; None when not given.

    Commas inside parentheses stay: ``"MTEB(eng, v2),wordnet"`` is two names.
    """
    names, depth, current = [], 0, ""
    for item in value:
        for char in item + ",":
            depth += (char == "(") - (char == ")")
            if char == "," and depth <= 0:
                names.append(current.strip())
                current, depth = "", 0
            else:
                current += char
    names = [name for name in names if name]
    return names or None


def library_default(function: Callable[..., Any], parameter: str) -> Any:
    """``function``'s default for ``parameter``: an option's default is the library's, never retyped."""
    return inspect.signature(function).parameters[parameter].default
