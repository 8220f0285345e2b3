"""The outputs rule (boom_merge.outputs): inputs are never touched, outputs appear whole or not at all."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from boom_merge.errors import BoomError
from boom_merge.lineage import LINEAGE_FILE
from boom_merge.outputs import (
    OUTPUT_MARKER,
    atomic_output_dir,
    check_output,
    check_output_file,
    is_boom_output,
    mark_output,
    output_lock,
    write_output_file,
)


def tree_sha256(root: Path) -> dict[str, str]:
    """Every path under ``root`` (hidden ones too) -> sha256 of its content (or what it is)."""

    def state(path: Path) -> str:
        if path.is_symlink():
            return f"link to {os.readlink(path)}"
        return "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()

    return {str(p.relative_to(root)): state(p) for p in sorted(root.rglob("*"))}


def strays(root: Path) -> list[Path]:
    """Temporary, displaced or lock files left anywhere under ``root``."""
    return [p for p in root.rglob(".*") if any(tag in p.name for tag in (".tmp-", ".old-", ".lock"))]


def _model(path: Path) -> Path:
    """A stand-in for a model directory (what matters here is that its bytes stay the same)."""
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (path / "model.safetensors").write_bytes(os.urandom(256))
    return path


def _refused(out, match: str, **kwargs) -> None:
    with pytest.raises(BoomError, match=match) as error:
        with atomic_output_dir(out, **kwargs) as tmp:
            (tmp / "written").write_text("x")
    assert "\n" not in str(error.value)
    with pytest.raises(BoomError, match=match):
        check_output(out, **kwargs)


@pytest.mark.parametrize("force", [False, True])
@pytest.mark.parametrize(("where", "match"), [
    (lambda inp: inp, "is the input"),
    (lambda inp: inp / "merged", "lies inside the input"),
    (lambda inp: inp.parent, "contains the input"),
])
def test_output_never_equals_contains_or_lies_inside_an_input(tmp_path, force, where, match) -> None:
    model = _model(tmp_path / "bag" / "m0")
    mark_output(tmp_path / "bag")  # even a boom-merge output is not replaced while it holds an input
    before = tree_sha256(tmp_path)
    _refused(where(model), match, force=force, inputs=[model])
    assert tree_sha256(tmp_path) == before and not strays(tmp_path)


def test_symlinks_are_resolved_first(tmp_path) -> None:
    model = _model(tmp_path / "old")
    (tmp_path / "into").symlink_to(model)
    (tmp_path / "below").symlink_to(model / "sub", target_is_directory=True)  # dangling, but inside OLD
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere" / "x")
    (tmp_path / "link-to-input").symlink_to(tmp_path / "into")  # an input given through a link
    before = tree_sha256(tmp_path)
    _refused(tmp_path / "into", "is the input", force=True, inputs=[model])
    _refused(tmp_path / "dangling", "dangling symlink")
    _refused(tmp_path / "below", "lies inside the input", inputs=[model])
    _refused(model / "new", "lies inside the input", inputs=[tmp_path / "link-to-input"])
    assert tree_sha256(tmp_path) == before and not strays(tmp_path)


@pytest.mark.parametrize("force", [False, True])
def test_an_input_whose_files_link_into_the_output_is_never_written_through(tmp_path, force) -> None:
    """A symlink farm (``cp -rs``), a linked sub-folder, a hard link: OUT holds the input's bytes, so writing
    OUT (in place, as plain mergekit-yaml does into an existing OUT) would write the input."""
    store = _model(tmp_path / "store")
    (store / "2_Dense").mkdir()
    (store / "2_Dense" / "model.safetensors").write_bytes(os.urandom(64))
    mark_output(store)  # an earlier boom-merge output: --force alone would replace it
    farm = tmp_path / "farm"
    farm.mkdir()
    (farm / "config.json").write_text("{}")
    (farm / "model.safetensors").symlink_to(store / "model.safetensors")
    linked_dir = tmp_path / "linked"
    linked_dir.mkdir()
    (linked_dir / "2_Dense").symlink_to(store / "2_Dense", target_is_directory=True)
    hard = tmp_path / "hard"
    hard.mkdir()
    os.link(store / "2_Dense" / "model.safetensors", hard / "dense.safetensors")
    elsewhere = _model(tmp_path / "elsewhere")
    before = tree_sha256(tmp_path)
    for model, entry, how in [(farm, farm / "model.safetensors", "a link to"),
                              (linked_dir, linked_dir / "2_Dense", "a link to"),
                              (hard, hard / "dense.safetensors", "a hard link of a file there")]:
        match = re.escape(f"output {store} holds files of the input {model} ({entry} is {how}")
        _refused(store, match, force=True, inputs=[model])
        with pytest.raises(BoomError, match=match):
            check_output(store, inputs=[model], force=force, into_existing=True)
    # OUT inside the folder an input's sub-folder links to: written into the input
    _refused(store / "2_Dense" / "out", re.escape(f"({linked_dir / '2_Dense'} is a link to {store / '2_Dense'})"),
             inputs=[linked_dir])
    # links elsewhere are no concern
    check_output(tmp_path / "new", inputs=[farm, elsewhere], force=force)
    assert tree_sha256(tmp_path) == before and not strays(tmp_path)


def test_a_symlink_to_an_earlier_output_replaces_its_target(tmp_path) -> None:
    with atomic_output_dir(tmp_path / "runs" / "v1") as tmp:
        (tmp / "a").write_text("1")
    (tmp_path / "latest").symlink_to(tmp_path / "runs" / "v1")
    with atomic_output_dir(tmp_path / "latest", force=True) as tmp:
        (tmp / "a").write_text("2")
    assert (tmp_path / "latest").is_symlink() and (tmp_path / "runs" / "v1" / "a").read_text() == "2"
    assert not strays(tmp_path)


def test_force_replaces_only_what_boom_merge_wrote(tmp_path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "notes.txt").write_text("mine")
    members = tmp_path / "members"  # the user's trained models, not an input of this run
    _model(members / "m0")
    _model(members / "m1")
    legacy = _model(tmp_path / "legacy")  # a merge whose marker is there
    mark_output(legacy)
    unmarked = _model(tmp_path / "unmarked")  # a lineage file alone does not make it ours
    (unmarked / LINEAGE_FILE).write_text("{}")
    (tmp_path / "file").write_text("data")
    before = tree_sha256(tmp_path)
    _refused(plain, "already exists; pass --force")
    _refused(plain, "not written by boom-merge", force=True)
    _refused(members, "not written by boom-merge", force=True)
    _refused(unmarked, "not written by boom-merge", force=True)
    _refused(tmp_path / "file", "not a directory", force=True)
    assert tree_sha256(tmp_path) == before and not strays(tmp_path)
    assert is_boom_output(legacy) and not is_boom_output(plain)
    with atomic_output_dir(legacy, force=True) as tmp:
        (tmp / "new").write_text("x")
    assert sorted(p.name for p in legacy.iterdir()) == [OUTPUT_MARKER, "new"]
    with atomic_output_dir(legacy, force=True) as tmp:  # and the marker makes it replaceable again
        (tmp / "newer").write_text("y")
    assert sorted(p.name for p in legacy.iterdir()) == [OUTPUT_MARKER, "newer"]
    empty = tmp_path / "empty"
    empty.mkdir()
    _refused(empty, "already exists; pass --force")
    with atomic_output_dir(empty, force=True) as tmp:  # with --force an empty dir is fine: nothing to lose
        (tmp / "new").write_text("x")
    assert not strays(tmp_path)


def test_a_failure_leaves_everything_as_it_was(tmp_path) -> None:
    out = tmp_path / "out"
    with atomic_output_dir(out) as tmp:
        (tmp / "weights").write_text("good")
    before = tree_sha256(tmp_path)
    with pytest.raises(RuntimeError):
        with atomic_output_dir(out, force=True) as tmp:
            (tmp / "weights").write_text("half")
            raise RuntimeError("merge failed")
    assert tree_sha256(tmp_path) == before
    with pytest.raises(KeyboardInterrupt):
        with atomic_output_dir(tmp_path / "a" / "b" / "new") as tmp:
            (tmp / "weights").write_text("half")
            raise KeyboardInterrupt
    assert tree_sha256(tmp_path) == before and not strays(tmp_path)  # the parents it made are gone too


def test_disk_errors_in_the_block_are_one_line(tmp_path) -> None:
    import errno

    with pytest.raises(BoomError, match="No space left on device"):
        with atomic_output_dir(tmp_path / "out"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert not list(tmp_path.iterdir())


def test_a_parent_made_meanwhile_by_another_process_is_not_a_file_in_the_way(tmp_path, monkeypatch) -> None:
    """Members trained in parallel (Ray) create the same OUT parent: losing that race is no error, and the
    parent is not counted as this run's (a failure would remove it)."""
    from boom_merge.durable import make_parents

    mkdir = Path.mkdir

    def raced(self, *args, **kwargs):
        mkdir(self, *args, **kwargs)  # the other process wins
        raise FileExistsError(17, "File exists", str(self))

    monkeypatch.setattr(Path, "mkdir", raced)
    assert make_parents(tmp_path / "a" / "b") == []
    monkeypatch.undo()
    assert (tmp_path / "a" / "b").is_dir()
    assert make_parents(tmp_path / "c" / "d") == [tmp_path / "c" / "d", tmp_path / "c"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(BoomError, match="a file is in the way"):
        make_parents(tmp_path / "file" / "x")


def test_a_parent_that_is_a_file(tmp_path) -> None:
    (tmp_path / "file").write_text("data")
    before = tree_sha256(tmp_path)
    _refused(tmp_path / "file" / "out", "is not a directory")
    _refused(tmp_path / "file" / "deeper" / "out", "is not a directory")
    assert tree_sha256(tmp_path) == before and not strays(tmp_path)


def test_a_read_only_parent(tmp_path) -> None:
    """Root ignores permission bits: the parent is made immutable (``chattr +i``) or, where the filesystem
    has no such flag, checked as 0o555 by a child that drops to an unprivileged uid."""
    parent = tmp_path / "ro"
    parent.mkdir()
    if os.geteuid() != 0:
        parent.chmod(0o555)
    elif subprocess.run(["chattr", "+i", str(parent)], capture_output=True).returncode != 0:
        _read_only_parent_as_nobody()  # no immutable flag here: the same check, run by an unprivileged child
        return
    try:
        with pytest.raises(BoomError, match=r"not writable|not permitted|Permission denied|Read-only") as error:
            with atomic_output_dir(parent / "out"):
                pass
        assert str(parent) in str(error.value) and "\n" not in str(error.value)
        with pytest.raises(BoomError, match=str(parent)):
            write_output_file(parent / "x.json", "{}")
        assert not list(parent.iterdir())
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(parent)], check=True)
        else:
            parent.chmod(0o755)


@pytest.mark.skipif(os.geteuid() != 0, reason="as a non-root user test_a_read_only_parent checks 0o555 itself")
def test_a_read_only_parent_for_an_unprivileged_child() -> None:
    """The fallback of test_a_read_only_parent where ``chattr`` is missing, run here too so it is known to work."""
    _read_only_parent_as_nobody()


def _read_only_parent_as_nobody() -> None:
    """Root ignores 0o555; a forked child that drops to uid 65534 does not (no exec: the interpreter under
    a private home stays usable). It reports each refusal's message through a pipe."""
    import tempfile

    top = Path(tempfile.mkdtemp(prefix="boom-ro-"))
    parent = top / "ro"
    try:
        top.chmod(0o755)
        parent.mkdir()
        parent.chmod(0o555)
        reader, writer = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns into pytest
            code = 1
            try:
                os.setgid(65534)
                os.setuid(65534)
                messages = []
                for write in (lambda: atomic_output_dir(parent / "out").__enter__(),
                              lambda: write_output_file(parent / "x.json", "{}")):
                    try:
                        write()
                        messages.append("written")
                    except BoomError as error:
                        messages.append(str(error))
                os.write(writer, json.dumps(messages).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(writer)
        with os.fdopen(reader) as pipe:
            text = pipe.read()
        assert os.waitpid(pid, 0)[1] == 0 and text, "the unprivileged child failed"
        messages = json.loads(text)
        assert all(str(parent) in m and "\n" not in m for m in messages), messages
        assert re.search(r"not writable|not permitted|Permission denied|Read-only", messages[0]), messages
        assert not list(parent.iterdir())
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_a_second_writer_fails_fast_with_one_line(tmp_path) -> None:
    out = tmp_path / "out"
    lock = tmp_path / ".out.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)  # another run holds the lock (flock: per open file)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, b"4242\n")
    try:
        with pytest.raises(BoomError, match=f"^another boom-merge is writing {out} \\(pid 4242\\)$"):
            with atomic_output_dir(out) as tmp:
                (tmp / "x").write_text("x")
    finally:
        os.close(fd)
    assert not out.exists()
    with atomic_output_dir(out) as tmp, output_lock(out):  # free again; the holder may re-enter
        (tmp / "x").write_text("x")
    assert not lock.exists() and not strays(tmp_path)


_WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from boom_merge.outputs import atomic_output_dir
    with atomic_output_dir(sys.argv[1], force=True) as tmp:
        (tmp / "weights").write_bytes(b"half" * 1000)
        print(tmp, flush=True)
        time.sleep(60)
""")


def _default_sigint() -> None:
    # a job started in the background (`cmd &`, as CI may run the suite) inherits SIGINT ignored, and
    # Python then installs no KeyboardInterrupt handler: give the writer the terminal's default
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _writer(out: Path) -> tuple[subprocess.Popen, Path]:
    process = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(out)], stdout=subprocess.PIPE, text=True, preexec_fn=_default_sigint
    )
    tmp = Path(process.stdout.readline().strip())
    assert tmp.is_dir() and tmp.parent == out.parent and tmp.name.startswith(f".{out.name}.tmp-")
    return process, tmp


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_remove_the_temporary_dir(tmp_path, signum) -> None:
    out = tmp_path / "out"
    with atomic_output_dir(out) as tmp:
        (tmp / "weights").write_text("old")
    before = tree_sha256(tmp_path)
    process, tmp = _writer(out)
    process.send_signal(signum)
    assert process.wait(timeout=30) != 0
    assert not tmp.exists() and tree_sha256(tmp_path) == before and not strays(tmp_path)


def test_the_next_run_removes_what_a_killed_run_left(tmp_path) -> None:
    out = tmp_path / "out"
    process, tmp = _writer(out)
    process.kill()  # SIGKILL: no handler runs
    process.wait(timeout=30)
    assert tmp.is_dir() and (tmp / OUTPUT_MARKER).is_file()
    (tmp_path / ".out.tmp-notapid-x").mkdir()  # not ours: kept
    with atomic_output_dir(out) as new:
        (new / "weights").write_text("whole")
    assert not tmp.exists() and (out / "weights").read_text() == "whole"
    assert (tmp_path / ".out.tmp-notapid-x").is_dir()


def test_output_modes_follow_the_umask(tmp_path) -> None:
    previous = os.umask(0o022)
    try:
        with atomic_output_dir(tmp_path / "out") as tmp:
            (tmp / "model.safetensors").write_bytes(b"x")
            (tmp / "model.safetensors").chmod(0o600)  # what safetensors / mergekit may write
            (tmp / "1_Pooling").mkdir(mode=0o700)
            (tmp / "1_Pooling" / "config.json").write_text("{}")
            (tmp / "1_Pooling" / "config.json").chmod(0o600)
            (tmp / "run.sh").write_text("#!/bin/sh\n")
            (tmp / "run.sh").chmod(0o700)
        report = write_output_file(tmp_path / "report.json", "{}")
    finally:
        os.umask(previous)
    modes = {p.name: p.stat().st_mode & 0o777 for p in [tmp_path / "out", *(tmp_path / "out").rglob("*"), report]}
    assert modes == {"out": 0o755, "model.safetensors": 0o644, "1_Pooling": 0o755, "config.json": 0o644,
                     "run.sh": 0o755, OUTPUT_MARKER: 0o644, "report.json": 0o644}


def test_output_files(tmp_path) -> None:
    model = _model(tmp_path / "old")
    before = tree_sha256(tmp_path)
    for path, match in [
        (Path("/nonexistent/dir/x.json"), "the directory /nonexistent/dir does not exist"),
        (model / "drift.json", "lies inside the input"),
        (model, "is the input"),
        (tmp_path / "old" / "model.safetensors" / "x.json", "lies inside the input"),
        (tmp_path, "contains the input"),
    ]:
        with pytest.raises(BoomError, match=match):
            write_output_file(path, "{}", inputs=[model])
    with pytest.raises(BoomError, match="is a directory"):
        check_output_file(model)
    assert tree_sha256(tmp_path) == before
    write_output_file(tmp_path / "r.json", "1")
    write_output_file(tmp_path / "r.json", "2")
    with pytest.raises(BoomError, match="already exists"):
        write_output_file(tmp_path / "r.json", "3", force=False)
    assert (tmp_path / "r.json").read_text() == "2" and not strays(tmp_path)
