"""Reading a merge's inputs ahead (boom_merge.merge.read_ahead): what is read, in which order, how
far ahead, and that the merge is the same with it and without it."""

from __future__ import annotations

import ctypes
import hashlib
import mmap
import os
import platform
import re
import shutil
import sys
import tempfile
import threading
from contextlib import nullcontext
from pathlib import Path

import mergekit.graph
import pytest
import torch
import yaml
from mergekit.io.tasks import LoadTensor
from safetensors.torch import load_file, save_file

import boom_merge.merge.read_ahead as read_ahead
from boom_merge.errors import BoomError
from boom_merge.merge.checks import loaded_tensors, model_files, read_header
from boom_merge.merge.pipeline import merge_recipe
from tests.test_models import place_in_cache
from tests.tiny_models import make_tiny_st, write_recipe


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


def _digests(models: list[Path]) -> dict[Path, str]:
    return {f: hashlib.sha256(f.read_bytes()).hexdigest() for m in models for f in sorted(m.rglob("*")) if f.is_file()}


def _check_read_ahead(recorded: _Recorded, inputs: list[Path]) -> None:
    """Every tensor mergekit loads from ``inputs`` (their transformers class's, less stale buffers) was
    read once, in the order mergekit loaded it; mergekit's names are its own again."""
    expected = {(info.file, *info.span) for m in inputs for info in loaded_tensors(model_files(m)).values()}
    assert len(recorded.spans) == len(expected) and set(recorded.spans) == expected
    # mergekit loaded the tensors in the order they were read ahead: each index once, rising
    assert recorded.loaded == sorted(set(recorded.loaded)) == list(range(len(recorded.spans)))
    assert (mergekit.graph.build_schedule.__name__, LoadTensor.execute.__qualname__) == (
        "build_schedule", "LoadTensor.execute")  # mergekit's own, put back
    assert not [t for t in threading.enumerate() if t.name == "boom-merge read-ahead"]


@pytest.mark.parametrize("kind", ["dirs", "sharded", "hub id", "symlink"])
def test_every_input_tensor_is_read_once_in_the_order_mergekit_loads_it(
        tmp_path: Path, tiny_bag: tuple[Path, list[Path]], monkeypatch: pytest.MonkeyPatch, hub_cache: Path,
        kind: str) -> None:
    base, members = tiny_bag
    inputs = members[:3]
    named: list[Path | str] = list(inputs)
    if kind == "sharded":
        inputs[0] = named[0] = _sharded(members[0], tmp_path / "sharded-0")
    if kind == "hub id":
        inputs[0], named[0] = place_in_cache(members[0], hub_cache, "acme/member-0"), "acme/member-0"
    if kind == "symlink":  # the recipe names a link to the member; mergekit is given that name
        named[0] = tmp_path / "link-0"
        named[0].symlink_to(members[0], target_is_directory=True)
    before = _digests(inputs)
    recorded = _Recorded(monkeypatch)
    recipe = tmp_path / "r.yml"
    recipe.write_text(yaml.safe_dump({"merge_method": "boom", "parameters": {"interpolation": "slerp"},
                                      "models": [{"model": str(m)} for m in named]}))
    merge_recipe(recipe, tmp_path / "out")
    _check_read_ahead(recorded, inputs)
    assert _digests(inputs) == before


def test_the_hubs_minilm_as_served_is_read_without_its_stale_buffer(
        tmp_path: Path, minilm_path: str, monkeypatch: pytest.MonkeyPatch, hub_cache: Path) -> None:
    """A base by its Hub id, the Hub's files unchanged (``embeddings.position_ids`` included), members saved
    today: the buffer mergekit does not load is not read ahead either."""
    served = place_in_cache(Path(minilm_path), hub_cache, "sentence-transformers/all-MiniLM-L6-v2")
    assert "embeddings.position_ids" in model_files(served).tensors
    members = [make_tiny_st(tmp_path / f"m{i}", seed=i + 1, perturb_from=minilm_path, perturb_scale=0.002)
               for i in range(2)]
    recorded = _Recorded(monkeypatch)
    merge_recipe(write_recipe(tmp_path / "r.yml", "boom", members, base="sentence-transformers/all-MiniLM-L6-v2"),
                 tmp_path / "out")
    _check_read_ahead(recorded, [*members, served])
    stale = model_files(served).tensors["embeddings.position_ids"]
    assert (stale.file, *stale.span) not in recorded.spans


def test_a_refused_merge_stops_the_reader_and_puts_mergekit_back(
        tmp_path: Path, tiny_bag: tuple[Path, list[Path]]) -> None:
    """A NaN found by the kernel midway: one Error, no thread left, mergekit's names its own."""
    _, members = tiny_bag
    bad = tmp_path / "bad"
    shutil.copytree(members[1], bad)
    weights = load_file(bad / "model.safetensors")
    name = sorted(weights)[-1]
    weights[name].view(-1)[0] = float("nan")
    save_file(weights, bad / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(BoomError, match="NaN"):
        merge_recipe(write_recipe(tmp_path / "r.yml", "boom", [members[0], bad]), tmp_path / "out")
    assert (mergekit.graph.build_schedule.__name__, LoadTensor.execute.__qualname__) == (
        "build_schedule", "LoadTensor.execute")
    assert not [t for t in threading.enumerate() if t.name == "boom-merge read-ahead"]
    assert not (tmp_path / "out").exists()


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


def _kernel_has_populate_read() -> bool:
    major, minor = (int(part) for part in re.match(r"(\d+)\.(\d+)", platform.release()).groups())
    return (major, minor) >= (5, 14)


def _on_disk(tmp_path: Path) -> Path:
    """``tmp_path``, or, where it lies on a RAM file system (tmpfs, ramfs: its pages cannot be dropped,
    so residency says nothing), a directory beside this test file, on the disk of the checkout."""
    real = os.path.realpath(tmp_path)
    mounts = [line.split()[1:3] for line in Path("/proc/mounts").read_text().splitlines()]
    point, kind = max(((p, k) for p, k in mounts if real == p or real.startswith(p.rstrip("/") + "/")),
                      key=lambda mount: len(mount[0]))
    if kind not in ("tmpfs", "ramfs"):
        return tmp_path
    return Path(tempfile.mkdtemp(dir=Path(__file__).parent, prefix=".read-ahead-"))


@pytest.mark.skipif(sys.platform != "linux", reason="read-ahead is Linux's: reading_ahead reads nothing elsewhere")
def test_populate_brings_the_bytes_into_the_page_cache(tmp_path: Path) -> None:
    """On Linux >= 5.14 the asked-for bytes, and not the rest, are in the page cache afterwards; on an
    older kernel populate says it cannot (and the reader stops: test_a_system_without_the_call...)."""
    where = _on_disk(tmp_path)
    file = where / "w.safetensors"
    size = 64 << 20  # the kernel's own readahead (8 MiB here) stays well inside the second half
    try:
        with file.open("wb") as handle:
            handle.write(os.urandom(size))
            handle.flush()
            os.fsync(handle.fileno())
        fd = os.open(file, os.O_RDONLY)
        libc = read_ahead._Libc()
        files = read_ahead._Files(libc)
        probe = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # clean pages of a disk file: dropped
            assert _resident(probe, size) < 0.5
            half = size // 2
            assert files.populate(file, 0, half) is _kernel_has_populate_read()
            if _kernel_has_populate_read():
                assert _resident(probe, half) == 1.0
                assert _resident(probe + half, size - half) < 0.5  # what was asked for (and the kernel's readahead)
        finally:
            libc.munmap(probe, size)
            files.close()
            os.close(fd)
    finally:
        if where != tmp_path:
            shutil.rmtree(where)
