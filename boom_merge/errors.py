"""The one exception type that users see as a one-line message (no traceback).

Owns: :class:`BoomError` and its one-line message. It may not import anything from boom-merge.
"""

from __future__ import annotations

from pathlib import Path


class BoomError(Exception):
    """A user-facing error: bad input, refused output, unreadable file.

    The CLI prints ``error: <message>`` and exits non-zero. Messages name the file
    (and tensor, line, ...) and the problem in one line.
    """

    def __init__(self, message: str, *, path: str | Path | None = None):
        self.path = str(path) if path is not None else None
        text = f"{self.path}: {message}" if self.path else message
        # one line whatever the input held (a recipe key or a file name with a line break in it)
        super().__init__(" ".join(part.strip() for part in text.splitlines() if part.strip()) or text)
