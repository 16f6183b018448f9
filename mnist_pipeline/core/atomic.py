"""Atomic file writes: write beside the target, fsync it, rename it over the target, fsync the
folder (so the rename itself survives a power cut)."""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from mnist_pipeline.core.errors import DataError
from mnist_pipeline.core.regular_file import NOT_REGULAR


def _read_umask() -> int:
    """The process's umask, read by setting and restoring it: once, at import, since a thread
    doing this while another does the same could restore 0 for good."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _read_umask()


def _naming(exc: OSError, path: Path) -> None:
    """Give an OSError that names no file (a write to an open file, or its fsync, on a full
    disk: `No space left on device`) the `path` it was for, so its one-line message says where."""
    if exc.filename is None and exc.errno is not None:  # else Python prints "[Errno None] None"
        exc.filename = str(path)


def temp_beside(target: Path, suffix: str) -> tuple[int, Path]:
    """A new temp file `.<name>.<random><suffix>` in `target`'s folder, open (mode 0600); an
    OSError names the folder when it takes no file (permissions, read-only), else `target`
    (`/proc/.x.38iencb2.tmp` would name a file the user never asked for)."""
    try:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):  # the folder takes no file
            exc.filename = str(target.parent)
        elif exc.errno != errno.ENAMETOOLONG:  # too long: the temp name, the one to show
            exc.filename = str(target)
        raise
    return fd, Path(name)


@contextmanager
def atomic_path(target: Path | str, *, name_errors: bool = True) -> Iterator[Path]:
    """Yield a temp path in the target's folder; on success rename it onto `target`.

    The temp name keeps the target's suffix (savefig and exporters infer formats from it).
    On any exception the temp file is removed and `target` is left untouched; an OSError that
    names no file is given `target`'s name (unless `name_errors` is False).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_beside(target, f".tmp{target.suffix}")
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp creates 0600; keep the usual permissions
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, target)
        _fsync_folder(target.parent)
    except OSError as exc:
        if name_errors:
            _naming(exc, target)
        raise
    finally:
        tmp.unlink(missing_ok=True)


def temp_files_of(target: Path) -> list[Path]:
    """The temp files `atomic_path` names for `target` (`.<name>.<random>.tmp<suffix>`) that
    exist now: writes in progress, or ones a killed process left."""
    return sorted(target.parent.glob(f".{target.name}.*.tmp{target.suffix}"))


@contextmanager
def atomic_paths(*targets: Path) -> Iterator[tuple[Path, ...]]:
    """atomic_path for several targets: a temp path for each, renamed onto its target in the
    order given, only once all were written and flushed to disk (the last one last: a record
    naming the others). On an exception while writing or flushing, no target is touched; an
    OSError that names no file is given the targets' folder (which file failed is not known)."""
    with ExitStack() as stack:  # entered in reverse, so exited (renamed) in the given order
        temps = [
            stack.enter_context(atomic_path(target, name_errors=False))
            for target in reversed(targets)
        ]
        try:
            yield tuple(reversed(temps))
        except OSError as exc:
            folders = [str(t.parent.resolve()) for t in targets]  # "" for "models", "reports"
            _naming(exc, Path(os.path.commonpath(folders)))
            raise
        for tmp, target in zip(temps, reversed(targets), strict=True):
            try:  # a full disk may say so only at fsync: before any rename
                _fsync_file(tmp)
            except OSError as exc:
                _naming(exc, target)
                raise


def _fsync_file(path: Path) -> None:
    """Flush a written file's data to disk."""
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _fsync_folder(folder: Path) -> None:
    """Flush a folder's entries (a rename into it) to disk."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_all(moves: list[tuple[Path, Path]], removals: list[Path]) -> None:
    """Rename each (written and flushed) file onto its target in the order given (the last
    last: a record naming the others), then remove `removals` (outputs not made this time), and
    flush the folders: the publishing of files staged in full beforehand, so that a failure
    while making them touched none of the targets."""
    for staged, target in moves:
        os.replace(staged, target)
    for path in removals:
        path.unlink(missing_ok=True)
    for folder in dict.fromkeys(p.parent for p in [*(t for _, t in moves), *removals]):
        _fsync_folder(folder)


def check_writable(*folders: Path) -> None:
    """Create each folder and a file in it, then remove the file: an OSError naming the path
    now, rather than after minutes of work (read-only filesystem, permissions, full disk)."""
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        try:
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
                pass
        except OSError as exc:  # the folder, not the probe's random name, is what to fix
            raise type(exc)(exc.errno, exc.strerror, str(folder)) from None


def check_targets(*files: Path) -> None:
    """check_writable for the files' folders, and an IsADirectoryError naming a file that is a
    folder: found before minutes of work, not by the rename at its end."""
    check_writable(*dict.fromkeys(path.parent for path in files))
    no_folders(*files)


def no_folders(*files: Path) -> None:
    """An IsADirectoryError naming the first of `files` that is a folder."""
    for path in files:
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))


def write_bytes(target: Path | str, data: bytes) -> None:
    """Atomically replace `target` with `data`."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text(target: Path | str, text: str) -> None:
    """Atomically replace `target` with UTF-8 `text`."""
    write_bytes(target, text.encode("utf-8"))


def json_bytes(obj: Any) -> bytes:
    """`obj` as the project writes JSON files: indented, with a trailing newline."""
    return (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode("utf-8")


def write_json(target: Path | str, obj: Any) -> None:
    """Atomically write `obj` as indented JSON with a trailing newline."""
    write_bytes(target, json_bytes(obj))


def write_many(files: dict[Path, bytes]) -> None:
    """Write every file to a temp path, then rename them onto their targets in the order given
    (the last last: a record naming the others); a failure while writing touches none, nor
    does a target that is a folder (found before the first rename, not at its own)."""
    no_folders(*map(Path, files))
    with atomic_paths(*files) as temps:
        for tmp, (target, data) in zip(temps, files.items(), strict=True):
            try:
                tmp.write_bytes(data)
            except OSError as exc:
                _naming(exc, target)
                raise


def write_with(target: Path | str, writer: Callable[[Path], None]) -> None:
    """Atomically create `target` with `writer(tmp_path)` (e.g. torch.save, savefig)."""
    with atomic_path(target) as tmp:
        writer(tmp)


def append_line(target: Path | str, line: str) -> None:
    """Append `line` and a newline to a log at `target` (one writer at a time: the caller's
    lock), flushed to disk, whole or not at all: a failed or short write is cut off again, and
    a line a crash left unfinished is ended first, so the new one starts on a line of its own.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # a pipe would swallow the line
        os.close(fd)
        raise OSError(errno.EINVAL, NOT_REGULAR, str(target))
    with open(fd, "ab+") as log:
        size = log.seek(0, os.SEEK_END)
        data = (line + "\n").encode()
        if size:
            log.seek(size - 1)
            if log.read(1) != b"\n":
                data = b"\n" + data
        try:
            if os.write(log.fileno(), data) != len(data):
                raise OSError(errno.ENOSPC, "No space left on device (short write)", str(target))
            os.fsync(log.fileno())
        except OSError:
            log.truncate(size)  # no half line for the next one to run on from
            raise


READ_LOCK_TIMEOUT_S = 600  # a fetch holds its folder's lock while it downloads


@contextmanager
def unchanging(*folders: Path, timeout: float = READ_LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold the writers' locks of `folders` (folder_lock, in the order given) while the caller
    reads them: what it reads and hashes is one writer's files, and none changes meanwhile. A
    lock file this user cannot open for writing (another user's, a folder it may only read, a
    read-only mount) is held shared through a read-only descriptor, which a writer's hold
    excludes all the same; where there is no lock file at all, no writer has held one."""
    with ExitStack() as held:
        for folder in folders:
            lock = folder_lock(folder, timeout)
            try:
                try:
                    held.enter_context(lock)
                except OSError as exc:
                    if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                        raise
                    held.enter_context(_held_shared(Path(lock.lock_file), timeout))
            except Timeout:
                raise DataError(
                    f"{folder} has been being written for {timeout:.0f} s ({lock.lock_file} is "
                    "held); try again"
                ) from None
        yield


@contextmanager
def _held_shared(lock_file: Path, timeout: float) -> Iterator[None]:
    """A shared flock of `lock_file` through a read-only descriptor (flock needs no write
    access; a writer's exclusive flock and this one exclude each other). Nothing to hold when
    the file does not exist (or on a system without flock)."""
    try:
        import fcntl
    except ImportError:  # Windows: filelock's own locks there are not flock
        fcntl = None
    descriptor = None
    if fcntl is not None:
        with suppress(FileNotFoundError):
            descriptor = os.open(lock_file, os.O_RDONLY)
    try:
        started = time.monotonic()
        while descriptor is not None:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if 0 <= timeout < time.monotonic() - started:
                    raise Timeout(str(lock_file)) from None
                time.sleep(0.05)
        yield
    finally:
        if descriptor is not None:
            os.close(descriptor)  # and with it the shared hold


def folder_lock(folder: Path, timeout: float = -1) -> FileLock:
    """The lock its writer holds while it replaces the files of `folder` (`.NAME.lock` beside
    it: fetch for data/mnist, ingest for data/ingested); a reader that must see one writer's
    files together (never some old, some new) holds it while it reads."""
    return FileLock(folder.parent / f".{folder.name}.lock", timeout=timeout)
