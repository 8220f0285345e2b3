"""Filesystem mechanics behind :mod:`boom_merge.outputs`: the per-output lock, parents
made and removed again, atomic swap of a finished dir, fsync, the umask's usual modes, and
SIGINT/SIGTERM turned into exceptions so that temporary dirs are cleaned up.

Owns: the filesystem mechanics of an output. It may not decide where an output may go
(:mod:`boom_merge.outputs` does) and imports nothing of boom-merge but :mod:`boom_merge.errors`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import logging
import os
import shutil
import signal
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from boom_merge.errors import BoomError

logger = logging.getLogger(__name__)

# flock errors that mean "not supported here" (some network filesystems), not "held"
_NO_LOCKS = frozenset({errno.ENOLCK, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL})
_HELD_LOCKS: dict[Path, int] = {}  # lock file -> depth, for re-entry within one process
_HELD_GUARD = threading.Lock()


def make_parents(directory: Path) -> list[Path]:
    """Create ``directory`` and its missing parents; return the ones created, deepest first."""
    missing = []
    while not os.path.lexists(directory):
        missing.append(directory)
        directory = directory.parent
    made: list[Path] = []
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:
            if path.is_dir():  # another process made it meanwhile (members trained in parallel): not ours
                continue
            remove_empty(made[::-1])
            raise BoomError(f"cannot create the directory {path}: a file is in the way") from None
        except OSError as error:
            remove_empty(made[::-1])
            if error.errno == errno.ENOTDIR:
                raise BoomError(f"cannot create the directory {path}: a file is in the way") from None
            raise BoomError(f"cannot create the directory: {error.strerror}", path=path) from None
        made.append(path)
    return made[::-1]


def remove_empty(directories: list[Path]) -> None:
    for path in directories:
        with contextlib.suppress(OSError):
            path.rmdir()


@contextlib.contextmanager
def output_lock(out: str | Path) -> Iterator[Path]:
    """Hold the lock of ``out`` (``.OUT.lock`` beside it, created and removed here).

    A second holder fails fast with ``another boom-merge is writing OUT``; the same
    process may re-enter. The lock dies with its process (``flock``), so a killed run
    never blocks the next one. Not ``filelock.FileLock(timeout=0)``: it leaves the lock file
    beside OUT on release and cannot say which pid holds it.
    """
    real = real_path(Path(os.fspath(out)).expanduser())
    created = make_parents(real.parent)
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
        remove_empty(created)
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
        remove_empty(created)


def _acquire(lock: Path, out: Path) -> int:
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as error:
            raise BoomError(f"cannot create the lock file {lock}: {error.strerror}", path=out) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in _NO_LOCKS:
                logger.warning("%s: this filesystem cannot lock (%s); concurrent runs are not detected", out,
                               error.strerror)
                return fd
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


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def umask() -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def usual_mode(mode: int, mask: int) -> int:
    """A file's mode as the umask ``mask`` makes it for new files: 666 less the mask, 777 for executables."""
    return (0o777 if mode & 0o111 else 0o666) & ~mask


def settle(directory: Path) -> None:
    """The umask's usual modes (some writers make files 600) and fsync, for every file and dir."""
    mask = umask()
    os.chmod(directory, 0o777 & ~mask)
    for root, dirs, files in os.walk(directory):
        for name in dirs:
            path = os.path.join(root, name)
            if not os.path.islink(path):  # never follow a link out of the output
                os.chmod(path, 0o777 & ~mask)
        for name in files:
            path = os.path.join(root, name)
            info = os.lstat(path)
            if stat.S_ISREG(info.st_mode):  # not links (their targets are not ours), nor FIFOs
                os.chmod(path, usual_mode(info.st_mode, mask))
                fsync_path(path)
        fsync_path(root)


def fsync_path(path: str | Path) -> None:
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


def replace_dir(tmp: Path, out: Path) -> None:
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
    fsync_path(out.parent)


class _Interrupted(BaseException):
    """SIGTERM turned into an exception so that the temporary dir is removed."""


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
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
def signals_blocked() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def real_path(path: Path) -> Path:
    """``path`` absolute with every symlink resolved (also a dangling one's target)."""
    try:
        return Path(os.path.realpath(path))
    except OSError as error:  # a symlink loop, on some Pythons
        raise BoomError(f"cannot resolve the path: {error.strerror or error}", path=path) from None
