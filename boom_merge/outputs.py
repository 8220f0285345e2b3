"""Output paths: the one place that decides where boom-merge may write, and how.

:func:`check_output` refuses an output that equals, contains or lies inside an input
(after resolving symlinks, with or without ``--force``), a dangling symlink, an existing
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
import ctypes
import errno
import fcntl
import json
import logging
import os
import re
import shutil
import signal
import socket
import stat
import tempfile
import threading
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from boom_merge import __version__
from boom_merge.errors import BoomError
from boom_merge.lineage import LINEAGE_FILE, MEMBER_FILE

logger = logging.getLogger(__name__)

OUTPUT_MARKER = ".boom-merge-output"
# files by which earlier versions' outputs are recognised (besides the marker)
_LEGACY_FILES = (LINEAGE_FILE, MEMBER_FILE, "quickstart.json")
_HELD_LOCKS: dict[Path, int] = {}  # lock file -> depth, for re-entry within one process
_HELD_GUARD = threading.Lock()


def _as_path(item: Any) -> Path | None:
    """A path from a str / PathLike / object with ``.path`` (e.g. a resolved model); None stays None."""
    if item is None:
        return None
    return Path(os.fspath(getattr(item, "path", item))).expanduser()


def _real(path: Path) -> Path:
    try:
        return Path(os.path.realpath(path))
    except OSError as error:  # a symlink loop, on some Pythons
        raise BoomError(f"cannot resolve the path: {error.strerror or error}", path=path) from None


def _shown(given: Path, real: Path) -> str:
    return str(given) if given.absolute() == real else f"{given} (-> {real})"


def is_boom_output(directory: str | Path) -> bool:
    """Whether boom-merge wrote ``directory``: our marker, or the files of earlier versions'
    outputs (lineage, member manifest, quickstart record, corpus manifest, eval summary)."""
    path = Path(directory)
    if not path.is_dir():
        return False
    if (path / OUTPUT_MARKER).is_file() or any((path / name).is_file() for name in _LEGACY_FILES):
        return True
    corpus = _read_json(path / "manifest.json")
    if isinstance(corpus, dict) and {"builder_version", "sources"} <= corpus.keys():
        return True
    summary = _read_json(path / "summary.json")
    return isinstance(summary, dict) and "model_paths" in summary


def _read_json(file: Path) -> Any:
    try:
        return json.loads(file.read_text(encoding="utf-8")) if file.is_file() else None
    except (OSError, ValueError):
        return None


def mark_output(directory: str | Path) -> Path:
    """Write the marker that lets a later ``--force`` replace ``directory``; return the marker."""
    marker = Path(directory) / OUTPUT_MARKER
    marker.write_text(json.dumps({
        "tool": "boom-merge", "version": __version__, "pid": os.getpid(), "host": socket.gethostname(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }) + "\n", encoding="utf-8")
    return marker


def _nested_model(directory: Path) -> Path | None:
    """A model or output of its own below ``directory`` (up to three levels), if any."""
    base = len(directory.parts)
    for root, dirs, files in os.walk(directory):
        here = Path(root)
        if len(here.parts) - base >= 3:
            dirs.clear()
        if here == directory:
            continue
        if {"modules.json", OUTPUT_MARKER, *_LEGACY_FILES} & set(files):
            return here
        config = _read_json(here / "config.json") if "config.json" in files else None
        if isinstance(config, dict) and ("model_type" in config or "architectures" in config):
            return here
    return None


def _check_inputs(given: Path, real: Path, inputs: Iterable[Any]) -> None:
    for item in inputs:
        source = _as_path(item)
        if source is None or not os.path.lexists(source):
            continue  # a Hub id or a path that does not exist cannot be overwritten
        other = _real(source)
        shown = _shown(given, real)
        if other == real:
            raise BoomError(f"output {shown} is the input {source}; write elsewhere")
        if other in real.parents:
            raise BoomError(f"output {shown} lies inside the input {source}; write elsewhere")
        if real in other.parents:
            raise BoomError(f"output {shown} contains the input {source}; write elsewhere")


def _check_existing(given: Path, real: Path, force: bool) -> None:
    if not os.path.lexists(real):
        return
    shown = _shown(given, real)
    if not force:
        raise BoomError(f"output {shown} already exists; pass --force to replace it")
    if real.is_dir() and not any(real.iterdir()):
        return  # an empty dir: nothing to lose
    if not real.is_dir():
        raise BoomError(f"output {shown} exists and is not a directory; --force replaces only boom-merge outputs")
    if not is_boom_output(real):
        raise BoomError(f"output {shown} exists and was not written by boom-merge; --force replaces only "
                        "boom-merge outputs: remove it yourself or write elsewhere")
    if not any((real / name).is_file() for name in (OUTPUT_MARKER, "quickstart.json")):
        # an earlier version's model or report (a quickstart run holds its own models): no other model inside
        nested = _nested_model(real)
        if nested is not None:
            raise BoomError(f"output {shown} holds another model ({nested}); --force will not delete it")


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
    real = _real(given)
    _check_inputs(given, real, inputs)
    if given.is_symlink() and not given.exists():
        raise BoomError(f"output {given} is a dangling symlink (to {os.readlink(given)}); "
                        "remove it or point it at a directory")
    if not (into_existing and real.is_dir()):
        _check_existing(given, real, force)
    _check_parent(given, real)
    return real


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
    real = _real(given)
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
        _make_parents(real.parent)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{real.name}.tmp-{os.getpid()}-", dir=real.parent)
    except OSError as error:
        raise BoomError(f"cannot write in {real.parent}: {error.strerror}", path=out) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fchmod(handle.fileno(), 0o666 & ~_umask())
            os.fsync(handle.fileno())
        os.replace(name, real)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(name)
        if isinstance(error, OSError):
            raise BoomError(f"cannot write the file: {error.strerror}", path=out) from None
        raise
    return real


def refuse_existing(out: str | Path, force: bool) -> Path:
    """:func:`check_output` without inputs (kept for callers of earlier versions)."""
    return check_output(out, force=force)


def _make_parents(directory: Path) -> list[Path]:
    """Create ``directory`` and its missing parents; return the ones created, deepest first."""
    missing = []
    while not os.path.lexists(directory):
        missing.append(directory)
        directory = directory.parent
    made: list[Path] = []
    for path in reversed(missing):
        try:
            path.mkdir()
        except OSError as error:
            _remove_empty(made[::-1])
            if isinstance(error, FileExistsError) or error.errno == errno.ENOTDIR:
                raise BoomError(f"cannot create the directory {path}: a file is in the way") from None
            raise BoomError(f"cannot create the directory: {error.strerror}", path=path) from None
        made.append(path)
    return missing


def _remove_empty(directories: list[Path]) -> None:
    for path in directories:
        with contextlib.suppress(OSError):
            path.rmdir()


@contextlib.contextmanager
def output_lock(out: str | Path) -> Iterator[Path]:
    """Hold the lock of ``out`` (``.OUT.lock`` beside it, created and removed here).

    A second holder fails fast with ``another boom-merge is writing OUT``; the same
    process may re-enter. The lock dies with its process (``flock``), so a killed run
    never blocks the next one.
    """
    real = _real(_as_path(out))
    created = _make_parents(real.parent)
    lock = real.parent / f".{real.name}.lock"
    with _HELD_GUARD:
        depth = _HELD_LOCKS.get(lock, 0)
        if depth:
            _HELD_LOCKS[lock] = depth + 1
    if depth:
        try:
            yield real
        finally:
            with _HELD_GUARD:
                _HELD_LOCKS[lock] -= 1
        return
    try:
        fd = _acquire(lock, real)
    except BaseException:
        _remove_empty(created)
        raise
    with _HELD_GUARD:
        _HELD_LOCKS[lock] = 1
    try:
        yield real
    finally:
        with _HELD_GUARD:
            del _HELD_LOCKS[lock]
        with contextlib.suppress(OSError):
            lock.unlink()  # while still held: a waiter that opened it sees a new inode and retries
        os.close(fd)
        _remove_empty(created)


def _acquire(lock: Path, out: Path) -> int:
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as error:
            raise BoomError(f"cannot create the lock file {lock}: {error.strerror}", path=out) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                pid = f" (pid {holder})" if holder.isdigit() else ""
                raise BoomError(f"another boom-merge is writing {out}{pid}") from None
            raise BoomError(f"cannot lock {lock}: {error.strerror}", path=out) from None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock))
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return fd
        os.close(fd)  # the previous holder removed it between our open and flock: take the new one


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
        if not match or entry.is_symlink() or not entry.is_dir() or _alive(int(match.group(2))):
            continue
        if match.group(1) == "old" and not os.path.lexists(out):
            logger.warning("%s: restoring the output an interrupted run displaced", out)
            with contextlib.suppress(OSError):
                entry.rename(out)
            continue
        logger.info("%s: removing the temporary dir of an interrupted run", entry)
        shutil.rmtree(entry, ignore_errors=True)


def _umask() -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _finish(tmp: Path) -> None:
    """Marker, the umask's usual modes (some writers make files 600), fsync of every file and dir."""
    if not (tmp / OUTPUT_MARKER).is_file():
        mark_output(tmp)
    mask = _umask()
    os.chmod(tmp, 0o777 & ~mask)
    for root, dirs, files in os.walk(tmp):
        for name in dirs:
            path = os.path.join(root, name)
            if not os.path.islink(path):  # never follow a link out of the output
                os.chmod(path, 0o777 & ~mask)
        for name in files:
            path = os.path.join(root, name)
            info = os.lstat(path)
            if stat.S_ISREG(info.st_mode):  # not links (their targets are not ours), nor FIFOs
                os.chmod(path, (0o777 if info.st_mode & 0o111 else 0o666) & ~mask)
                _fsync(path)
        _fsync(root)


def _fsync(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2); False where the system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EPERM):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _replace(tmp: Path, out: Path) -> None:
    """Move ``tmp`` to ``out``; an existing ``out`` is swapped out atomically, then deleted."""
    if not os.path.lexists(out):
        tmp.rename(out)
    elif _exchange(tmp, out):
        shutil.rmtree(tmp, ignore_errors=True)  # now the old output
    else:
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-{os.getpid()}-", dir=out.parent))
        old.rmdir()
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    _fsync(out.parent)


class _Interrupted(BaseException):
    """SIGTERM turned into an exception so that the temporary dir is removed."""


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """In the main thread: SIGINT/SIGTERM raise (KeyboardInterrupt / exit 143) instead of
    killing the process outright; the previous handlers come back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum: int, frame: Any) -> None:
        raise _Interrupted(signum)

    previous = {signal.SIGINT: signal.getsignal(signal.SIGINT), signal.SIGTERM: signal.getsignal(signal.SIGTERM)}
    if previous[signal.SIGINT] in (signal.SIG_DFL, None):
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if previous[signal.SIGTERM] in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    except _Interrupted:
        raise SystemExit(128 + signal.SIGTERM) from None
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


@contextlib.contextmanager
def _signals_blocked() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


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
    with output_lock(real), _interruptible():
        _remove_stale(real)
        check_output(given, inputs=inputs, force=force)  # again, now that no other run can write it
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f".{real.name}.tmp-{os.getpid()}-", dir=real.parent))
        except OSError as error:
            raise BoomError(f"cannot write in {real.parent}: {error.strerror}", path=given) from None
        try:
            mark_output(tmp)
            yield tmp
            with _signals_blocked():
                _finish(tmp)
                _replace(tmp, real)
        except BaseException as error:
            with _signals_blocked():
                shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(error, OSError) and error.errno in _STORAGE_ERRORS:
                raise BoomError(f"cannot write the output: {error.strerror}", path=given) from None
            raise


# what the place of an output (not the program) is to blame for
_STORAGE_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG,
                             errno.EBUSY, errno.EXDEV})
