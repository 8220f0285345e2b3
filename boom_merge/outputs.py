"""Output paths: the one place that decides where boom-merge may write, and how.

Owns: the decision whether a path may be written, and atomic output dirs and files. It never
lets an output go into, over or around an input; the filesystem mechanics are in
:mod:`boom_merge.durable`.

:func:`check_output` refuses an output that equals, contains or lies inside an input
(after resolving symlinks, with or without ``--force``), one that holds an input's files (an
input's entries that link into it, its files' hard links), a dangling symlink, an existing
output without ``--force``, and, with ``--force``, anything boom-merge did not write.
:func:`atomic_output_dir` applies those rules, takes the output's lock
(:func:`output_lock`), removes the temporary dirs of dead runs, and yields a marked
temporary sibling that replaces the output only when the block succeeds (usual modes
from the umask, fsync, rename); on any failure, SIGINT or SIGTERM the temporary dir is
removed and an existing output is left as it was. :func:`write_output_file` does the
same for a single file (a report, a recipe).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from boom_merge import __version__
from boom_merge.durable import (
    interruptible,
    make_parents,
    output_lock,
    pid_alive,
    real_path,
    replace_dir,
    settle,
    signals_blocked,
    umask,
)
from boom_merge.errors import BoomError

__all__ = [
    "OUTPUT_MARKER", "atomic_output_dir", "check_apart", "check_output", "check_output_file", "discard_output",
    "is_boom_output", "mark_output", "output_lock", "write_output_file",
]

logger = logging.getLogger(__name__)

OUTPUT_MARKER = ".boom-merge-output"


def _as_path(item: Any) -> Path | None:
    """A path from a str / PathLike / object with ``.path`` (e.g. a resolved model); None stays None."""
    if item is None:
        return None
    return Path(os.fspath(getattr(item, "path", item))).expanduser()


def _shown(given: Path, real: Path) -> str:
    return str(given) if given.absolute() == real else f"{given} (-> {real})"


def is_boom_output(directory: str | Path) -> bool:
    """Whether boom-merge wrote ``directory`` (it holds our marker)."""
    return (Path(directory) / OUTPUT_MARKER).is_file()


def mark_output(directory: str | Path) -> Path:
    """Write the marker that lets a later ``--force`` replace ``directory``; return the marker."""
    marker = Path(directory) / OUTPUT_MARKER
    marker.write_text(json.dumps({
        "tool": "boom-merge", "version": __version__, "pid": os.getpid(), "host": socket.gethostname(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }) + "\n", encoding="utf-8")
    return marker


def _check_inputs(given: Path, real: Path, inputs: Iterable[Any]) -> None:
    shared = _hard_linked(real)
    for item in inputs:
        source = _as_path(item)
        if source is None or not os.path.lexists(source):
            continue  # a Hub id or a path that does not exist cannot be overwritten
        other = real_path(source)
        shown = _shown(given, real)
        if other == real:
            raise BoomError(f"output {shown} is the input {source}; write elsewhere")
        if other in real.parents:
            raise BoomError(f"output {shown} lies inside the input {source}; write elsewhere")
        if real in other.parents:
            raise BoomError(f"output {shown} contains the input {source}; write elsewhere")
        for entry, target in _entries(other):
            if target is not None and (target == real or real in target.parents or target in real.parents):
                raise BoomError(f"output {shown} holds files of the input {source} ({entry} is a link to "
                                f"{target}); write elsewhere")
            if target is None and shared and _identity(entry) in shared:
                raise BoomError(f"output {shown} holds files of the input {source} ({entry} is a hard link "
                                "of a file there); write elsewhere")


def _entries(folder: Path) -> Iterator[tuple[Path, Path | None]]:
    """Every file and folder under ``folder`` (not through links; a file: itself), with a link's resolved target (else None):
    an input whose files link into OUT (a symlink farm, ``cp -rs``) would be written through them."""
    if not folder.is_dir():
        yield folder, None
        return
    for root, dirs, files in os.walk(folder):
        for name in (*dirs, *files):
            entry = Path(root, name)
            yield entry, real_path(entry) if entry.is_symlink() else None


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _hard_linked(real: Path) -> set[tuple[int, int]]:
    """The (device, inode) of OUT's files that have other names (a file written in place, as plain
    mergekit-yaml does into an existing OUT, would change those names' content too)."""
    paths = [real] if real.is_file() else [entry for entry, _ in _entries(real)]
    found = set()
    for path in paths:
        try:
            info = path.lstat()
        except OSError:
            continue
        if info.st_nlink > 1 and not path.is_dir():
            found.add((info.st_dev, info.st_ino))
    return found


def _check_existing(given: Path, real: Path, force: bool) -> None:
    if not os.path.lexists(real):
        return
    shown = _shown(given, real)
    if not force:
        raise BoomError(f"output {shown} already exists; pass --force to replace it")
    if real.is_dir() and _empty(real):
        return  # an empty dir: nothing to lose
    if not real.is_dir():
        raise BoomError(f"output {shown} exists and is not a directory; --force replaces only boom-merge outputs")
    if not is_boom_output(real):
        raise BoomError(f"output {shown} exists and was not written by boom-merge; --force replaces only "
                        "boom-merge outputs: remove it yourself or write elsewhere")


def _empty(directory: Path) -> bool:
    try:
        return not any(directory.iterdir())
    except OSError:
        return False


def _check_parent(given: Path, real: Path) -> None:
    ancestor = real.parent
    while not os.path.lexists(ancestor):
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise BoomError(f"cannot create output {_shown(given, real)}: {ancestor} is not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise BoomError(f"cannot create output {_shown(given, real)}: {ancestor} is not writable")


def check_output(out: str | Path, *, inputs: Iterable[Any] = (), force: bool = False,
                 into_existing: bool = False) -> Path:
    """Apply the output rules to ``out`` without writing anything; return its resolved path.

    ``inputs`` are the model and data paths the command reads (str, Path or objects
    with ``.path``; None and paths that do not exist are skipped). ``into_existing``:
    another program (plain mergekit-yaml) writes into an existing ``out``; only the
    input rules apply to it.
    """
    given = _as_path(out)
    if given is None or str(out) == "":
        raise BoomError("no output path given")
    real = real_path(given)
    _check_inputs(given, real, inputs)
    if given.is_symlink() and not given.exists():
        raise BoomError(f"output {given} is a dangling symlink (to {os.readlink(given)}); "
                        "remove it or point it at a directory")
    if not (into_existing and real.is_dir()):
        _check_existing(given, real, force)
    _check_parent(given, real)
    return real


def check_apart(first: str | Path, second: str | Path) -> None:
    """Two outputs of one command neither equal nor contain each other (whether or not they exist yet)."""
    a, b = (real_path(_as_path(out)) for out in (first, second))  # type: ignore[arg-type]
    if a == b or a in b.parents or b in a.parents:
        raise BoomError(f"outputs {first} and {second} overlap (one would overwrite the other); write them apart")


def discard_output(out: str | Path) -> None:
    """Remove an output this run has just written, when a later step of the same command failed
    (all or nothing); only a directory boom-merge wrote is removed."""
    path = Path(out)
    if path.is_dir() and not path.is_symlink() and is_boom_output(path):
        logger.warning("%s: removed (a later step failed)", path)
        shutil.rmtree(path, ignore_errors=True)


def check_output_file(
    out: str | Path, *, inputs: Iterable[Any] = (), force: bool = True, parents: bool = False
) -> Path:
    """The rules for one output file (a report, a recipe); writes nothing, returns its resolved path.

    Its directory must exist (or, with ``parents``, be creatable); it must not be a
    directory, nor an input, nor inside one; an existing file is replaced only with ``force``.
    """
    given = _as_path(out)
    if given is None or str(out) == "":
        raise BoomError("no output file given")
    real = real_path(given)
    _check_inputs(given, real, inputs)
    shown = _shown(given, real)
    if real.is_dir():
        raise BoomError(f"output file {shown} is a directory")
    if os.path.lexists(real) and not force:
        raise BoomError(f"output file {shown} already exists; pass --force to replace it")
    if parents:
        _check_parent(given, real)
        return real
    if not real.parent.is_dir():
        problem = "is not a directory" if os.path.lexists(real.parent) else "does not exist"
        raise BoomError(f"cannot write {shown}: the directory {real.parent} {problem}")
    if not os.access(real.parent, os.W_OK | os.X_OK):
        raise BoomError(f"cannot write {shown}: {real.parent} is not writable")
    return real


def write_output_file(
    out: str | Path, text: str, *, inputs: Iterable[Any] = (), force: bool = True, parents: bool = False
) -> Path:
    """Write ``text`` to ``out`` atomically (temporary sibling, fsync, rename, umask mode);
    ``parents``: create missing directories above it."""
    real = check_output_file(out, inputs=inputs, force=force, parents=parents)
    if parents:
        make_parents(real.parent)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{real.name}.tmp-{os.getpid()}-", dir=real.parent)
    except OSError as error:
        raise BoomError(f"cannot write in {real.parent}: {error.strerror}", path=out) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fchmod(handle.fileno(), 0o666 & ~umask())
            os.fsync(handle.fileno())
        os.replace(name, real)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(name)
        if isinstance(error, OSError):
            raise BoomError(f"cannot write the file: {error.strerror}", path=out) from None
        raise
    return real


def _remove_stale(out: Path) -> None:
    """Remove the temporary dirs that dead runs left beside ``out`` (the lock is held).

    A dead run's displaced old output is put back when ``out`` itself is missing.
    """
    pattern = re.compile(rf"^\.{re.escape(out.name)}\.(tmp|old)-(\d+)-[^/]+$")
    try:
        entries = sorted(out.parent.iterdir())
    except OSError:
        return
    for entry in entries:
        match = pattern.match(entry.name)
        if not match or entry.is_symlink() or not entry.is_dir() or pid_alive(int(match.group(2))):
            continue
        if match.group(1) == "old" and not os.path.lexists(out):
            logger.warning("%s: restoring the output an interrupted run displaced", out)
            with contextlib.suppress(OSError):
                entry.rename(out)
            continue
        logger.info("%s: removing the temporary dir of an interrupted run", entry)
        shutil.rmtree(entry, ignore_errors=True)


def _finish(tmp: Path) -> None:
    """The marker (in case the writer removed it), usual modes, everything on disk."""
    if not (tmp / OUTPUT_MARKER).is_file():
        mark_output(tmp)
    settle(tmp)


@contextlib.contextmanager
def atomic_output_dir(out: str | Path, *, force: bool = False, inputs: Iterable[Any] = ()) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``out`` only if the block succeeds.

    The rules of :func:`check_output` apply (``inputs``: the paths the command reads);
    ``force`` replaces only an output boom-merge wrote. Raises :class:`BoomError` with
    one line for every refusal and for an output location that cannot be written.
    """
    inputs = list(inputs)
    given = _as_path(out)
    real = check_output(out, inputs=inputs, force=force)
    with output_lock(real), interruptible():
        _remove_stale(real)
        check_output(given, inputs=inputs, force=force)  # again, now that no other run can write it
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f".{real.name}.tmp-{os.getpid()}-", dir=real.parent))
        except OSError as error:
            raise BoomError(f"cannot write in {real.parent}: {error.strerror}", path=given) from None
        try:
            mark_output(tmp)
            yield tmp
            with signals_blocked():
                _finish(tmp)
                replace_dir(tmp, real)
        except BaseException as error:
            with signals_blocked():
                shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(error, OSError) and error.errno in _STORAGE_ERRORS:
                raise BoomError(f"cannot write the output: {error.strerror}", path=given) from None
            raise


# what the place of an output (not the program) is to blame for
_STORAGE_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG,
                             errno.EBUSY, errno.EXDEV})
