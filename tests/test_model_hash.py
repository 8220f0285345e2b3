"""The model hash: one definition, computed once per model state, never stale."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from boom_merge.lineage import model_sha256


def _independent(path: Path) -> str:
    """sha256 over each non-hidden file's relative path and bytes, in sorted order."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
        digest.update(f"{file.relative_to(path).as_posix()}\n".encode() + file.read_bytes())
    return digest.hexdigest()


@pytest.fixture
def model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BOOM_MERGE_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "model"
    (path / "1_Pooling").mkdir(parents=True)
    (path / "config.json").write_text('{"hidden_size": 8}')
    (path / "model.safetensors").write_bytes(os.urandom(4096))
    (path / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    past = time.time() - 60
    for file in path.rglob("*"):
        os.utime(file, (past, past))
    return path


def _reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    opened: list[Path] = []
    real = Path.open

    def spy(self: Path, mode: str = "r", *args, **kwargs):
        if "b" in mode and self.name == "model.safetensors":
            opened.append(self)
        return real(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", spy)
    return opened


def test_a_hash_is_read_once_per_model_state(model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = _independent(model)
    opened = _reads(monkeypatch)
    first = model_sha256(model)
    assert first == expected and len(opened) == 1
    assert model_sha256(model) == first and len(opened) == 1, "the unchanged model was read again"
    assert model_sha256(str(model) + "/") == first and len(opened) == 1


def test_an_edit_that_keeps_size_and_mtime_is_seen(model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = model_sha256(model)
    weights = model / "model.safetensors"
    stat = weights.stat()
    weights.write_bytes(bytes(4096))  # same size ...
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # ... and mtime: only ctime tells
    second = model_sha256(model)
    assert second != first and second == _independent(model)


@pytest.mark.parametrize("change", ["add", "remove", "rename"])
def test_added_removed_or_renamed_files_are_a_new_hash(model: Path, change: str) -> None:
    first = model_sha256(model)
    if change == "add":
        (model / "README.md").write_text("card")
    elif change == "remove":
        (model / "1_Pooling" / "config.json").unlink()
    else:
        (model / "config.json").rename(model / "config2.json")
    assert model_sha256(model) == _independent(model) != first


def test_a_file_written_just_now_is_hashed_but_not_kept(model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (model / "config.json").write_text('{"hidden_size": 16}')  # mtime: now
    expected = _independent(model)
    opened = _reads(monkeypatch)
    assert model_sha256(model) == expected
    assert model_sha256(model) == expected
    assert len(opened) == 2, "a racy file's hash was kept"


def test_a_corrupt_or_unwritable_cache_is_only_slower(model: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    expected = _independent(model)
    model_sha256(model)
    (entry,) = [p for p in (tmp_path / "cache" / "hashes").rglob("*") if p.is_file()]
    entry.write_text("0" * 63 + "\n")  # not a digest
    assert model_sha256(model) == expected
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setenv("BOOM_MERGE_CACHE", str(blocker))
    assert model_sha256(model) == expected
    assert blocker.read_text() == ""


def test_a_hub_id_hashes_its_snapshot_once(model: Path, hub_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Hub id as `hf download` leaves it (snapshot links to blobs): the files' bytes, read once."""
    from tests.test_models import place_in_cache

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snapshot = place_in_cache(model, hub_cache, "acme/tiny-hash")
    expected = _independent(model)
    past = time.time() - 60
    for blob in (snapshot.parent.parent / "blobs").iterdir():
        os.utime(blob, (past, past))
    opened = _reads(monkeypatch)
    assert model_sha256("acme/tiny-hash") == expected == model_sha256(snapshot)
    assert len(opened) == 1, "the snapshot was read again"
