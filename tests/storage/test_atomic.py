"""The atomic file write: old or new content, never a mix; durable once it returns; no debris on failure."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from firehose.storage.atomic import fsync_dir, write_atomic


def test_the_parts_are_written_back_to_back_and_replace_the_old_content(tmp_path: Path) -> None:
    target = tmp_path / "catalog.json"
    target.write_bytes(b"old content that is longer than the new one")
    write_atomic(target, (b"one ", bytearray(b"two "), memoryview(b"three")))
    assert target.read_bytes() == b"one two three"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["catalog.json"]


def test_the_parent_directory_is_created(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "obj"
    write_atomic(target, (b"x",))
    assert target.read_bytes() == b"x"


def test_file_fsync_then_rename_then_directory_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The content is on disk before the name points at it, and the rename itself is made durable."""
    target = tmp_path / "d" / "streams.json"
    target.parent.mkdir()
    events: list[tuple[str, int]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        st = os.fstat(fd)
        events.append(("fsync dir" if stat.S_ISDIR(st.st_mode) else "fsync file", st.st_ino))
        real_fsync(fd)

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        events.append(("rename", os.stat(src).st_ino))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    write_atomic(target, (b"new",))
    file_ino, dir_ino = target.stat().st_ino, target.parent.stat().st_ino
    assert events == [("fsync file", file_ino), ("rename", file_ino), ("fsync dir", dir_ino)]


def _fail_on(name: str, monkeypatch: pytest.MonkeyPatch, after: int = 0) -> None:
    """Make ``os.<name>`` raise EIO from its ``after + 1``-th call on (a disk failing mid-write)."""
    real: Callable[..., object] = getattr(os, name)
    calls = 0

    def failing(*args: object) -> object:
        nonlocal calls
        calls += 1
        if calls > after:
            raise OSError(5, "Input/output error")
        return real(*args)

    monkeypatch.setattr(os, name, failing)


@pytest.mark.parametrize(("call", "after"), [("write", 1), ("fsync", 0), ("replace", 0)])
def test_a_failure_before_the_rename_keeps_the_old_content_and_removes_the_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: str, after: int
) -> None:
    target = tmp_path / "catalog.json"
    target.write_bytes(b"old")
    _fail_on(call, monkeypatch, after)
    with pytest.raises(OSError, match="Input/output error"):
        write_atomic(target, (b"new part 1", b"new part 2"))
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["catalog.json"]


def test_a_temporary_file_left_by_a_crash_is_replaced_by_the_next_write(tmp_path: Path) -> None:
    target = tmp_path / "k" / "obj"
    target.parent.mkdir()
    (target.parent / ".firehose-tmp-obj").write_bytes(b"half an object written before a crash")
    write_atomic(target, (b"whole",), tmp_name=".firehose-tmp-obj")
    assert target.read_bytes() == b"whole"
    assert sorted(p.name for p in target.parent.iterdir()) == ["obj"]


def test_the_temporary_file_is_named_in_the_same_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "streams.json"
    seen: list[str] = []
    real_replace = os.replace

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        seen.append(os.fspath(src))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    write_atomic(target, (b"{}",))
    write_atomic(target, (b"{}",), tmp_name="streams.tmp")
    assert seen == [str(tmp_path / "streams.json.tmp"), str(tmp_path / "streams.tmp")]


@pytest.mark.parametrize("mode", [0o600, 0o644])
def test_the_file_gets_the_mode_asked_for_less_the_umask(tmp_path: Path, mode: int) -> None:
    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "f", (b"x",), mode=mode)
        write_atomic(tmp_path / "g", (b"x",))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "g").stat().st_mode) == 0o644  # 0o666, as open() creates files


def test_drop_cache_writes_the_same_content(tmp_path: Path) -> None:
    write_atomic(tmp_path / "obj", (b"a" * 70_000, b"b"), drop_cache=True)
    assert (tmp_path / "obj").read_bytes() == b"a" * 70_000 + b"b"


def test_fsync_dir_refuses_what_is_not_a_directory(tmp_path: Path) -> None:
    fsync_dir(tmp_path)
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(NotADirectoryError):
        fsync_dir(tmp_path / "file")


def _states_after_return(root: Path, act: Callable[[], None]) -> list[set[str]]:
    """The trees every power cut after ``act`` returned may leave (its calls recorded, none after)."""
    import random

    from tests.support.crashfs import PowerCut, Recorder

    rec = Recorder(root)
    with rec.recording():
        act()
    cut = PowerCut(rec.ops)
    return [set(image.files) for _state, image in cut.states(len(rec.ops), random.Random(0), 50)]


def test_a_file_written_into_new_directories_survives_power_loss(tmp_path: Path) -> None:
    """The directories write_atomic creates are durable in their parents before it returns: a power cut
    cannot take the file's directory (and the file with it) once it returned."""
    for tree in _states_after_return(tmp_path, lambda: write_atomic(tmp_path / "a" / "b" / "f", (b"x",))):
        assert {"a", "a/b", "a/b/f"} <= tree


def test_make_dirs_creates_durably_and_leaves_existing_directories(tmp_path: Path) -> None:
    from firehose.storage.atomic import make_dirs

    for tree in _states_after_return(tmp_path, lambda: make_dirs(tmp_path / "x" / "y")):
        assert {"x", "x/y"} <= tree
    make_dirs(tmp_path / "x" / "y")  # exists: nothing to do
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(FileExistsError):
        make_dirs(tmp_path / "file")
