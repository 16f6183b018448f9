"""Crashes part-way through a write, deterministic: for every kind of file the pipeline writes
(weights, IDX data, CSV, JSON reports, PNG plots), a writer killed half-way through its bytes,
killed at fsync or at the rename, or failing there, leaves the target's old bytes, and the next
reader loads them (tests/crash_writers.py writes and reads each kind as the pipeline does)."""

from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mnist_pipeline.core import atomic
from mnist_pipeline.core.errors import EXIT_IO, PipelineError
from mnist_pipeline.inbox import pending
from tests.conftest import REPO_ROOT
from tests.crash_writers import READERS, WRITERS

KINDS = sorted(WRITERS)


def write_in_child(
    kind: str, mode: str, target: Path, limit: int = 0
) -> subprocess.CompletedProcess[str]:
    """Write `target` (seed 2) in a child process that crashes or fails as `mode` says."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    args = [sys.executable, "-m", "tests.crash_writers", kind, mode, str(target), "2", str(limit)]
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)


def old_and_new(kind: str, tmp_path: Path) -> tuple[Path, bytes, bytes]:
    """The target holding an old file (seed 1), its bytes, and the bytes a new write makes."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    WRITERS[kind](scratch / kind, 2)
    target = tmp_path / "out" / kind
    target.parent.mkdir()
    WRITERS[kind](target, 1)
    old, new = target.read_bytes(), (scratch / kind).read_bytes()
    assert old != new
    return target, old, new


def others(target: Path) -> list[Path]:
    return sorted(p for p in target.parent.iterdir() if p != target)


@pytest.mark.parametrize("kind", KINDS)
def test_a_writer_killed_half_way_through_its_bytes_leaves_the_old_file(
    kind: str, tmp_path: Path
) -> None:
    target, old, new = old_and_new(kind, tmp_path)
    half = len(new) // 2
    proc = write_in_child(kind, "half", target, limit=half)
    assert proc.returncode == -signal.SIGXFSZ, proc.stderr[-2000:]
    assert target.read_bytes() == old
    READERS[kind](target)
    # The killed writer left its temp file: hidden, beside the target, half written, unreadable.
    [partial] = others(target)
    assert partial.name.startswith(f".{kind}.") and partial.stat().st_size == half
    with pytest.raises((PipelineError, AssertionError, OSError, ValueError)):
        READERS[kind](partial)
    WRITERS[kind](target, 2)  # the next write replaces the old file whole
    assert target.read_bytes() == new
    READERS[kind](target)


@pytest.mark.parametrize("kind", KINDS)
def test_a_full_disk_is_one_line_naming_the_file_and_leaves_the_old_one(
    kind: str, tmp_path: Path
) -> None:
    target, old, new = old_and_new(kind, tmp_path)
    proc = write_in_child(kind, "full", target, limit=len(new) // 2)
    assert proc.returncode == EXIT_IO, proc.stderr[-2000:]
    assert proc.stderr == f"error: {target}: File too large\n"
    assert target.read_bytes() == old and others(target) == []
    READERS[kind](target)


def test_files_written_together_name_the_one_that_failed_or_else_their_folder(
    tmp_path: Path,
) -> None:
    first, second = tmp_path / "out" / "a.json", tmp_path / "out" / "b.json"

    def full(*args) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OSError) as failed:
        atomic.write_with(first, full)
    assert failed.value.filename == str(first)
    with pytest.raises(OSError) as failed, atomic.atomic_paths(first, second):
        full()
    assert failed.value.filename == str(first.parent)
    named = OSError(errno.EACCES, os.strerror(errno.EACCES), "/elsewhere")
    with pytest.raises(OSError) as failed, atomic.atomic_path(first):
        raise named
    assert failed.value.filename == "/elsewhere"  # a name it had is kept
    with pytest.raises(OSError) as failed, atomic.atomic_path(first):
        raise OSError("cannot write mode RGBA as JPEG")  # no errno: its message stays whole
    assert failed.value.filename is None and str(failed.value) == "cannot write mode RGBA as JPEG"
    assert not first.exists() and not second.exists() and others(first) == []


@pytest.mark.parametrize("point", ["fsync", "rename"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_writer_killed_at_fsync_or_rename_leaves_the_old_file(
    kind: str, point: str, tmp_path: Path
) -> None:
    target, old, new = old_and_new(kind, tmp_path)
    proc = write_in_child(kind, f"{point}-crash", target)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert target.read_bytes() == old
    READERS[kind](target)
    [whole] = others(target)  # the temp file, complete: only the rename was missing
    assert whole.name.startswith(f".{kind}.") and whole.read_bytes() == new


@pytest.mark.parametrize("point", ["fsync", "replace"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_failing_fsync_or_rename_is_an_error_and_leaves_no_temp_file(
    kind: str, point: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target, old, _ = old_and_new(kind, tmp_path)

    def fails(*args, **kwargs):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, point, fails)
    with pytest.raises(OSError, match="Input/output error"):
        WRITERS[kind](target, 2)
    monkeypatch.undo()
    assert target.read_bytes() == old and others(target) == []
    READERS[kind](target)


def test_the_file_is_flushed_before_the_rename_and_the_folder_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the first fsync a power cut can leave the renamed file empty; without the second
    the rename itself can be lost."""
    calls: list[tuple[str, int]] = []
    fsync, replace = os.fsync, os.replace

    def record_fsync(fd: int) -> None:
        info = os.fstat(fd)
        calls.append(("fsync-folder" if stat.S_ISDIR(info.st_mode) else "fsync-file", info.st_ino))
        fsync(fd)

    def record_replace(src, dst) -> None:
        calls.append(("rename", os.stat(src).st_ino))
        replace(src, dst)

    monkeypatch.setattr(os, "fsync", record_fsync)
    monkeypatch.setattr(os, "replace", record_replace)
    target = tmp_path / "out" / "report.json"
    atomic.write_json(target, {"accuracy": 0.99})
    written, folder = target.stat().st_ino, target.parent.stat().st_ino
    assert calls == [("fsync-file", written), ("rename", written), ("fsync-folder", folder)]


def test_files_written_together_are_all_flushed_before_the_first_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk may say so only when a file is flushed: the last file's failing fsync leaves
    every target as it was (no new data beside an old record naming it)."""
    targets = [tmp_path / "images.idx", tmp_path / "labels.idx", tmp_path / "report.json"]
    for target in targets:
        target.write_bytes(b"old")
    fsync = os.fsync

    def disk_full_at_the_report(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").split("/")[-1].startswith(".report.json."):
            raise OSError(28, "No space left on device")
        fsync(fd)

    monkeypatch.setattr(os, "fsync", disk_full_at_the_report)
    with pytest.raises(OSError, match="No space left"):
        atomic.write_many({target: b"new" for target in targets})
    assert [t.read_bytes() for t in targets] == [b"old"] * 3
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(t.name for t in targets)


def test_writes_from_several_threads_never_touch_the_process_umask(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading the umask means setting it: a thread doing so while another did the same could
    leave it 0 (every file world-writable). Writes use the value read at import; a chmod that
    fails leaves no temp file."""

    def changed(*args: object) -> int:
        raise AssertionError("a write set the process umask")

    monkeypatch.setattr(os, "umask", changed)
    atomic.write_bytes(tmp_path / "a.bin", b"a")
    assert stat.S_IMODE((tmp_path / "a.bin").stat().st_mode) == 0o666 & ~atomic.UMASK

    def refused(*args: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "chmod", refused)
    with pytest.raises(PermissionError):
        atomic.write_bytes(tmp_path / "b.bin", b"b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_a_log_line_is_appended_whole_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A review log after a short write (a full disk) or a crash mid-line: the next line still
    starts on a line of its own, and a failed append leaves the log as it was."""
    log = tmp_path / "review-log.jsonl"
    pending.append_log(log, {"n": 1})
    with log.open("ab") as crashed:
        crashed.write(b'{"n": 2, "cut')  # what a crash mid-append left
    pending.append_log(log, {"n": 3})
    assert log.read_bytes().splitlines() == [b'{"n": 1}', b'{"n": 2, "cut', b'{"n": 3}']
    before = log.read_bytes()
    real_write = os.write

    def short(fd: int, data: bytes) -> int:
        return real_write(fd, data[:5])  # the disk filled after 5 bytes

    monkeypatch.setattr(atomic.os, "write", short)
    with pytest.raises(OSError, match="No space left on device"):
        pending.append_log(log, {"n": 4})
    monkeypatch.setattr(atomic.os, "write", real_write)
    assert log.read_bytes() == before  # the 5 bytes cut off again
    pending.append_log(log, {"n": 5})
    assert log.read_bytes().splitlines()[-1] == b'{"n": 5}'
