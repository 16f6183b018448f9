"""core.atomic.unchanging: a reader holds the writers' folder locks while it reads, also where it
cannot open a lock file for writing (another user's, a read-only folder): then it holds the lock
shared through a read-only descriptor, which the writer's exclusive hold excludes."""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path

import pytest

from mnist_pipeline.core import atomic
from mnist_pipeline.core.errors import DataError


class NotWritable:
    """A lock whose file this user cannot open for writing (tests run as root, so the refusal
    is made here): what FileLock raises then, with `code` (EACCES: another user's file; EPERM;
    EROFS: a read-only mount)."""

    code = errno.EACCES

    def __init__(self, folder: Path, timeout: float = -1) -> None:
        self.lock_file = str(folder.parent / f".{folder.name}.lock")

    def __enter__(self) -> None:
        raise OSError(self.code, os.strerror(self.code), self.lock_file)

    def __exit__(self, *exc: object) -> None:
        raise AssertionError("never held")


def reading_while(folder: Path, timeout: float) -> tuple[threading.Thread, list[object]]:
    """`unchanging(folder)` entered in a thread; what it got (None, or the error)."""
    got: list[object] = []

    def read() -> None:
        try:
            with atomic.unchanging(folder, timeout=timeout):
                got.append(None)
        except DataError as exc:
            got.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    return reader, got


@pytest.fixture(params=["EACCES", "EPERM", "EROFS"])
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Path:
    monkeypatch.setattr(NotWritable, "code", getattr(errno, request.param))
    monkeypatch.setattr(atomic, "folder_lock", NotWritable)
    folder = tmp_path / "data" / "ingested"
    folder.mkdir(parents=True)
    return folder


def test_a_reader_that_cannot_write_the_lock_file_waits_for_the_writer(folder: Path) -> None:
    writer = atomic.FileLock(folder.parent / ".ingested.lock")  # as ingest holds it
    writer.acquire()
    try:
        reader, got = reading_while(folder, timeout=30)
        time.sleep(0.5)
        assert got == []  # still waiting
    finally:
        writer.release()
    reader.join(10)
    assert got == [None]


def test_a_writer_that_holds_on_is_named_after_the_timeout(folder: Path) -> None:
    writer = atomic.FileLock(folder.parent / ".ingested.lock")
    writer.acquire()
    try:
        reader, got = reading_while(folder, timeout=0.3)
        reader.join(10)
    finally:
        writer.release()
    assert len(got) == 1 and isinstance(got[0], DataError)
    assert f"{folder} has been being written for 0 s" in str(got[0])


def test_without_a_lock_file_no_writer_has_held_one(folder: Path) -> None:
    with atomic.unchanging(folder, timeout=1):
        pass  # nothing to wait on, nothing created
    assert not (folder.parent / ".ingested.lock").exists()


def test_readers_that_cannot_write_the_lock_file_read_side_by_side(folder: Path) -> None:
    """Their holds are shared: a second reader does not wait for the first to finish."""
    writer = atomic.FileLock(folder.parent / ".ingested.lock")
    writer.acquire()
    writer.release()  # the lock file exists, free
    with atomic.unchanging(folder, timeout=1):
        reader, got = reading_while(folder, timeout=0.3)
        reader.join(10)
    assert got == [None]
