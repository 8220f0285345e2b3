"""Reading a merge's inputs ahead of mergekit, so that the disk and the kernel work at the same time.

Owns: :func:`reading_ahead`, a context manager around one mergekit run. It never changes what is
merged: it only brings the inputs' bytes into the page cache earlier than the merge would.

safetensors maps tensors lazily, so a merge reads its inputs as page faults inside the kernel: the
disk idles while the kernel computes and the kernel waits while the disk reads. While mergekit
runs, one thread reads the inputs' tensors in the order mergekit's schedule loads them, at most
:data:`READ_AHEAD_BYTES` past the last tensor mergekit has loaded. It reads with
``madvise(MADV_POPULATE_READ)`` on a read-only map of each chunk: synchronous, in order, and no copy
(``posix_fadvise(WILLNEED)``, which only asks, was measured slower: its reads compete with the
kernel's). Off Linux, and where the kernel lacks the call (before 5.14), nothing is read ahead.

mergekit has no hook for this; it takes two of mergekit 0.1.5's names for the length of the run
and puts them back: ``mergekit.graph.build_schedule`` (to learn the order) and
``mergekit.io.tasks.LoadTensor.execute`` (to learn where mergekit is).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import mmap
import os
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from boom_merge.merge.checks import ModelFiles

logger = logging.getLogger(__name__)

READ_AHEAD_BYTES = 1 << 30  # past the last tensor mergekit loaded: more than a 4B layer of 4 inputs (0.8 GB); not tuned
_CHUNK = 8 << 20  # one madvise call; the thread checks for the end of the run between calls
_MADV_POPULATE_READ = 22  # linux/mman.h, since Linux 5.14


class _Libc:
    """``mmap``, ``madvise`` and ``munmap`` through ctypes (which lets go of the GIL while they run)."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.mmap, self.madvise, self.munmap = libc.mmap, libc.madvise, libc.munmap
        self.mmap.restype = ctypes.c_void_p
        self.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                              ctypes.c_long]
        self.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        self.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]


class _Files:
    """The inputs' files, opened on first use, all closed by :meth:`close`."""

    def __init__(self, libc: _Libc) -> None:
        self._libc = libc
        self._open: dict[Path, int] = {}

    def populate(self, file: Path, start: int, stop: int) -> bool:
        """Read ``file``'s bytes [start, stop) into the page cache; False when the system cannot.

        Each call maps only those bytes and unmaps them at once: the pages stay cached, but are not
        counted as this process's memory (RSS) for the rest of the merge.
        """
        if file not in self._open:
            self._open[file] = os.open(file, os.O_RDONLY)
        start -= start % mmap.PAGESIZE
        if stop <= start:
            return True
        address = self._libc.mmap(None, stop - start, mmap.PROT_READ, mmap.MAP_SHARED, self._open[file], start)
        if address in (None, ctypes.c_void_p(-1).value):
            return False
        try:
            return self._libc.madvise(address, stop - start, _MADV_POPULATE_READ) == 0
        finally:
            self._libc.munmap(address, stop - start)

    def close(self) -> None:
        for fd in self._open.values():
            os.close(fd)
        self._open.clear()


class _Reader:
    """The thread: reads ``spans`` (file, start, stop) in order, at most ``ahead`` bytes past the
    last span mergekit has loaded (:meth:`loaded`)."""

    def __init__(self, spans: Sequence[tuple[Path, int, int]], ahead: int, libc: _Libc) -> None:
        self._spans = spans
        self._ends = list(_running_sums(stop - start for _, start, stop in spans))
        self._ahead = ahead
        self._files = _Files(libc)
        self._loaded = 0  # bytes up to the end of the last span mergekit loaded
        self._stopped = False
        self._wake = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="boom-merge read-ahead", daemon=True)
        self._thread.start()

    def loaded(self, index: int) -> None:
        with self._wake:
            self._loaded = max(self._loaded, self._ends[index])
            self._wake.notify()

    def stop(self) -> None:
        with self._wake:
            self._stopped = True
            self._wake.notify()
        self._thread.join()
        self._files.close()

    def _run(self) -> None:
        try:
            for (file, start, stop), end in zip(self._spans, self._ends):
                for chunk in range(start, stop, _CHUNK):
                    with self._wake:
                        while not self._stopped and end - (stop - chunk) - self._loaded >= self._ahead:
                            self._wake.wait()
                        if self._stopped:
                            return
                    if not self._files.populate(file, chunk, min(chunk + _CHUNK, stop)):
                        logger.debug("read-ahead stopped: madvise(MADV_POPULATE_READ) failed (errno %d)",
                                     ctypes.get_errno())
                        return
        except OSError as error:  # an input gone or unreadable: the merge itself will say so
            logger.debug("read-ahead stopped: %s", error)


def _running_sums(values: Iterable[int]) -> Iterator[int]:
    total = 0
    for value in values:
        total += value
        yield total


def _spans(schedule: Any, models: Sequence[ModelFiles]) -> tuple[list[tuple[Path, int, int]], dict[Any, int]]:
    """The byte spans of the tensors mergekit's ``schedule`` loads, in its order, and each load
    task's index among them. Tasks whose model or tensor is not among ``models`` are left out."""
    from mergekit.io.tasks import LoadTensor

    by_dir = {os.path.realpath(files.path): files for files in models}
    spans: list[tuple[Path, int, int]] = []
    index: dict[Any, int] = {}
    for handle in schedule.tasks:
        task = handle.task()
        if not isinstance(task, LoadTensor) or task in index:
            continue
        files = by_dir.get(os.path.realpath(str(task.model.model.path)))
        names = [task.tensor, *(task.aliases or ()), *(task.tied_names or ())]
        info = next((files.tensors[n] for n in names if n in files.tensors), None) if files else None
        if info is None or info.span is None:
            continue
        index[task] = len(spans)
        spans.append((info.file, *info.span))
    return spans, index


_ONE_AT_A_TIME = threading.Lock()  # mergekit's names are process-wide: one reader of them at a time


@contextlib.contextmanager
def reading_ahead(models: Sequence[ModelFiles], ahead: int = READ_AHEAD_BYTES) -> Iterator[None]:
    """For the mergekit run inside it, read ``models``' tensors ahead of the merge.

    Inside another one (a merge started from a merge's thread or another thread), it reads nothing.
    """
    if sys.platform != "linux":  # MADV_POPULATE_READ is Linux's (another system's 22 means something else)
        yield
        return
    try:
        libc = _Libc()
    except (OSError, AttributeError):  # no C library with mmap/madvise: nothing to read ahead with
        yield
        return
    if not _ONE_AT_A_TIME.acquire(blocking=False):
        yield
        return
    try:
        with _hooked(models, ahead, libc):
            yield
    finally:
        _ONE_AT_A_TIME.release()


@contextlib.contextmanager
def _hooked(models: Sequence[ModelFiles], ahead: int, libc: _Libc) -> Iterator[None]:
    """mergekit's ``build_schedule`` and ``LoadTensor.execute`` wrapped to drive a :class:`_Reader`."""
    import mergekit.graph as graph
    from mergekit.io.tasks import LoadTensor

    readers: list[_Reader] = []
    order: dict[Any, tuple[_Reader, int]] = {}
    build_schedule, execute = graph.build_schedule, LoadTensor.execute

    @functools.wraps(build_schedule)
    def scheduled(*args: Any, **kwargs: Any) -> Any:
        schedule = build_schedule(*args, **kwargs)
        spans, index = _spans(schedule, models)
        if spans:
            reader = _Reader(spans, ahead, libc)
            readers.append(reader)
            order.update((task, (reader, i)) for task, i in index.items())
        return schedule

    @functools.wraps(execute)
    def load(self: Any) -> Any:
        where = order.get(self)
        if where is not None:
            where[0].loaded(where[1])
        return execute(self)

    graph.build_schedule, LoadTensor.execute = scheduled, load
    try:
        yield
    finally:
        graph.build_schedule, LoadTensor.execute = build_schedule, execute
        for reader in readers:
            reader.stop()
