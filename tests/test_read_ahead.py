"""Reading a merge's inputs ahead (boom_merge.merge.read_ahead): what is read, in which order, how
far ahead, and that the merge is the same with it and without it."""

from __future__ import annotations

import ctypes
import mmap
import os
import threading
from contextlib import nullcontext
from pathlib import Path

import mergekit.graph
import pytest
import torch
from mergekit.io.tasks import LoadTensor
from safetensors.torch import load_file, save_file

import boom_merge.merge.pipeline as pipeline
import boom_merge.merge.read_ahead as read_ahead
from boom_merge.merge.checks import model_files, read_header
from boom_merge.merge.pipeline import merge_recipe
from tests.tiny_models import make_tiny_bert_st, write_recipe


class _Recorded:
    """What the merge's reader was given, and what mergekit loaded, in order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.spans: list[tuple[Path, int, int]] = []
        self.loaded: list[int] = []
        reader = read_ahead._Reader
        recorded = self

        class Reader(reader):
            def __init__(self, spans, ahead, libc):
                recorded.spans.extend(spans)
                super().__init__(spans, ahead, libc)

            def loaded(self, index):
                recorded.loaded.append(index)
                super().loaded(index)

        monkeypatch.setattr(read_ahead, "_Reader", Reader)


def _sharded(source: Path, target: Path) -> Path:
    """``source`` with its weights split into one file per tensor (as a small max_shard_size does)."""
    import json
    import shutil

    shutil.copytree(source, target)
    weights = load_file(target / "model.safetensors")
    (target / "model.safetensors").unlink()
    index = {"metadata": {}, "weight_map": {}}
    for i, name in enumerate(sorted(weights)):
        file = f"model-{i + 1:05d}-of-{len(weights):05d}.safetensors"
        save_file({name: weights[name].contiguous()}, target / file, metadata={"format": "pt"})
        index["weight_map"][name] = file
    (target / "model.safetensors.index.json").write_text(json.dumps(index))
    return target


@pytest.mark.parametrize("sharded", [False, True])
def test_every_input_tensor_is_read_once_in_the_order_mergekit_loads_it(
        tmp_path: Path, tiny_bag: tuple[Path, list[Path]], monkeypatch: pytest.MonkeyPatch, sharded: bool) -> None:
    base, members = tiny_bag
    members = members[:3]
    if sharded:
        members = [_sharded(members[0], tmp_path / "sharded-0"), *members[1:]]
    recorded = _Recorded(monkeypatch)
    merge_recipe(write_recipe(tmp_path / "r.yml", "boom", members, parameters={"interpolation": "slerp"}),
                 tmp_path / "out")
    expected = {(info.file, *info.span) for m in members for info in model_files(m).tensors.values()}
    assert len(recorded.spans) == len(expected) and set(recorded.spans) == expected
    # mergekit loaded the tensors in the order they were read ahead: each index once, rising
    assert recorded.loaded == sorted(set(recorded.loaded)) == list(range(len(recorded.spans)))
    assert (mergekit.graph.build_schedule.__name__, LoadTensor.execute.__qualname__) == (
        "build_schedule", "LoadTensor.execute")  # mergekit's own, put back


def test_spans_are_the_bytes_safetensors_reads(tmp_path: Path) -> None:
    tensors = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.ones(5, dtype=torch.bfloat16),
               "c": torch.tensor([7], dtype=torch.int64)}
    save_file(tensors, tmp_path / "m.safetensors")
    data = (tmp_path / "m.safetensors").read_bytes()
    for name, info in read_header(tmp_path / "m.safetensors").items():
        start, stop = info.span
        assert data[start:stop] == tensors[name].view(torch.uint8).numpy().tobytes()


def test_the_merge_is_the_same_with_and_without_reading_ahead(
        tmp_path: Path, tiny_bag: tuple[Path, list[Path]], monkeypatch: pytest.MonkeyPatch) -> None:
    base, members = tiny_bag
    recipe = write_recipe(tmp_path / "r.yml", "boom", members, base=base, parameters={"scale": 0.5})
    merge_recipe(recipe, tmp_path / "with")
    monkeypatch.setattr(read_ahead, "reading_ahead", lambda models, **_: nullcontext())
    merge_recipe(recipe, tmp_path / "without")
    ours, theirs = load_file(tmp_path / "with" / "model.safetensors"), load_file(tmp_path / "without" / "model.safetensors")
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


class _FakeLibc:
    """Records madvise calls (file offset, length) and unmaps; ``fail`` makes madvise return -1."""

    PAGE = mmap.PAGESIZE

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[int, int]] = []
        self.unmapped = 0
        self.fail = fail
        self.called = threading.Event()

    def mmap(self, _address, size, _prot, _flags, _fd, offset):
        return (1 << 40) + offset

    def madvise(self, address, length, advice):
        assert advice == 22
        self.calls.append((address - (1 << 40), length))
        self.called.set()
        return -1 if self.fail else 0

    def munmap(self, address, size):
        self.unmapped += 1
        return 0


def _sparse(file: Path, size: int) -> Path:
    """A file of ``size`` bytes that takes no disk (the fake libc never reads it)."""
    file.write_bytes(b"")
    os.truncate(file, size)
    return file


def _wait_until_idle(reader: read_ahead._Reader, libc: _FakeLibc) -> int:
    """The bytes read once the thread has nothing more it may read."""
    for _ in range(200):
        before = len(libc.calls)
        threading.Event().wait(0.01)
        if len(libc.calls) == before:
            break
    return sum(length for _, length in libc.calls)


def test_the_reader_stays_within_its_distance_of_mergekit(tmp_path: Path) -> None:
    chunk = read_ahead._CHUNK
    file = _sparse(tmp_path / "w.safetensors", 10 * chunk)
    spans = [(file, i * chunk, (i + 1) * chunk) for i in range(10)]
    libc = _FakeLibc()
    reader = read_ahead._Reader(spans, 3 * chunk, libc)
    try:
        assert _wait_until_idle(reader, libc) == 3 * chunk  # nothing loaded yet: three chunks ahead
        reader.loaded(1)  # mergekit has loaded spans 0 and 1
        assert _wait_until_idle(reader, libc) == 5 * chunk
        reader.loaded(9)
        assert _wait_until_idle(reader, libc) == 10 * chunk
        assert [offset for offset, _ in libc.calls] == [i * chunk for i in range(10)]  # in order, once
    finally:
        reader.stop()
    assert libc.unmapped == 10  # each chunk mapped only while it is read


def test_a_reader_waiting_for_mergekit_stops_at_once(tmp_path: Path) -> None:
    file = _sparse(tmp_path / "w.safetensors", 4 * read_ahead._CHUNK)
    libc = _FakeLibc()
    reader = read_ahead._Reader([(file, 0, 4 * read_ahead._CHUNK)], read_ahead._CHUNK, libc)
    libc.called.wait(5)
    reader.stop()  # joins the thread, which was waiting for mergekit
    assert not reader._thread.is_alive() and len(libc.calls) == 1


def test_a_system_without_the_call_reads_nothing_ahead_and_merges(tmp_path: Path) -> None:
    file = _sparse(tmp_path / "w.safetensors", 4 * read_ahead._CHUNK)
    libc = _FakeLibc(fail=True)
    reader = read_ahead._Reader([(file, 0, 4 * read_ahead._CHUNK)], 8 * read_ahead._CHUNK, libc)
    reader._thread.join(5)
    assert not reader._thread.is_alive() and len(libc.calls) == 1  # gave up after the first refusal
    reader.stop()


def _resident(address: int, length: int) -> float:
    """The share of the pages of [address, address + length) in the page cache (mincore)."""
    libc = ctypes.CDLL(None, use_errno=True)
    pages = (length + mmap.PAGESIZE - 1) // mmap.PAGESIZE
    vector = (ctypes.c_ubyte * pages)()
    assert libc.mincore(ctypes.c_void_p(address), ctypes.c_size_t(length), vector) == 0
    return sum(v & 1 for v in vector) / pages


def test_populate_brings_the_bytes_into_the_page_cache(tmp_path: Path) -> None:
    file = tmp_path / "w.safetensors"
    size = 64 << 20  # the kernel's own readahead (8 MiB here) stays well inside the second half
    with file.open("wb") as handle:
        handle.write(os.urandom(size))
        handle.flush()
        os.fsync(handle.fileno())
    fd = os.open(file, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        libc = read_ahead._Libc()
        files = read_ahead._Files(libc)
        probe = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        try:
            if _resident(probe, size) > 0.5:
                pytest.skip("this file system keeps the file's pages cached (tmpfs?): nothing to read")
            half = size // 2
            if not files.populate(file, 0, half):
                pytest.skip("madvise(MADV_POPULATE_READ) is not supported here (Linux < 5.14)")
            assert _resident(probe, half) == 1.0
            assert _resident(probe + half, size - half) < 0.5  # what was asked for (and the kernel's readahead)
        finally:
            libc.munmap(probe, size)
            files.close()
    finally:
        os.close(fd)
