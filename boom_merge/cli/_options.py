"""Options shared by commands of several stages; not a stage, registers no commands.

Owns: the ``--device`` and ``--allow-pickle`` options, reading repeatable comma-list options, and
:func:`config_options`, which generates a command's options from a library settings dataclass (type, default, help and
flag spellings), as mergekit's ``add_merge_options`` does from ``MergeOptions``: a default or a
help text lives in the library only. It may not define commands or call the library.
"""

from __future__ import annotations

import functools
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, Field, fields
from typing import Any

import click

from boom_merge.errors import BoomError

device_option = click.option(
    "--device", default=None, metavar="DEVICE",
    help="Torch device: cuda, cuda:1, cpu, mps (default: cuda when available, else cpu).",
)

allow_pickle_option = click.option(
    "--allow-pickle", is_flag=True, help="Accept pickled .bin weights (unpickling can run code)."
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


# --- options generated from a settings dataclass ---------------------------------------


def unoptional(annotation: Any) -> Any:
    """``X | None`` -> ``X``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def _unescape(text: str | None) -> str | None:
    """A typed ``\\n`` becomes a newline (prompts such as ``Instruct: {task}\\nQuery: ``)."""
    return text.replace("\\n", "\n") if text else text


def _mapping(value: tuple[str, ...]) -> dict[str, str] | None:
    """Repeated ``NAME=TEXT`` values as a dict (None when none was given)."""
    pairs = {}
    for item in value:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise BoomError(f"expected NAME=TEXT, got {item!r}")
        pairs[name] = _unescape(text)
    return pairs or None


def _option(field: Field, kind: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The click option of one settings field: ``--name`` (or ``metadata["flags"]``), help from ``metadata["help"]``;
    a bool is a ``--name/--no-name`` switch, a ``Literal`` a choice, a ``dict`` repeated ``NAME=TEXT``."""
    flags = list(field.metadata.get("flags") or (f"--{field.name.replace('_', '-')}",))
    settings: dict[str, Any] = {"help": field.metadata["help"], "show_default": True}
    if kind is bool:
        flags = [f"{flags[0]}/--no-{flags[0][2:]}", *flags[1:]]
        settings["default"] = field.default
    elif typing.get_origin(kind) is dict:
        settings.update(multiple=True, metavar="NAME=TEXT", show_default=False)
    elif typing.get_origin(kind) is typing.Literal:
        settings.update(type=click.Choice(typing.get_args(kind)), default=field.default)
    else:
        settings.update(type=kind, default=field.default)
        shown = str(field.default).replace("\n", "\\n")  # typed as \n (see _unescape)
        settings["show_default"] = shown if field.default is not None else False
    return click.option(*flags, field.name, **settings)


def config_options(cls: type, name: str = "config") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: an option per field of the dataclass ``cls`` that has a default; the command gets ``name=cls(...)``.

    String values are unescaped (a typed ``\\n`` is a newline), ``dict`` fields read from repeated ``NAME=TEXT``.
    """
    hints = typing.get_type_hints(cls)
    chosen = [f for f in fields(cls) if f.default is not MISSING]
    kinds = {f.name: unoptional(hints[f.name]) for f in chosen}

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(command)
        def wrapper(**options: Any) -> Any:
            values = {f.name: options.pop(f.name) for f in chosen}
            for field_name, kind in kinds.items():
                if typing.get_origin(kind) is dict:
                    values[field_name] = _mapping(values[field_name])
                elif kind is str:
                    values[field_name] = _unescape(values[field_name])
            return command(**{name: cls(**values)}, **options)

        for option in reversed([_option(f, kinds[f.name]) for f in chosen]):
            wrapper = option(wrapper)
        return wrapper

    return decorate
