"""Options shared by commands of several stages (``--device``); not a stage, registers no commands.

Owns: the ``--device`` option. It may not define commands or call the library.
"""

from __future__ import annotations

import click

device_option = click.option(
    "--device", default=None, metavar="DEVICE",
    help="Torch device: cuda, cuda:1, cpu, mps (default: cuda when available, else cpu).",
)
