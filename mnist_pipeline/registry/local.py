"""The registry's storage in a local folder (storage.py's first backend).

create-if-absent: the bytes go to a temp file beside the target, are fsynced and made
read-only, then hard-linked to the key's name, which fails if the name exists (atomic on POSIX
filesystems), and the folder is fsynced. compare-and-swap: under a per-document flock, the
current bytes' SHA-256 is compared with the expected revision before an atomic replace.
Temp and lock files start with '.', which no key does, so listings never show them; a temp file
a killed writer left is listed by `abandoned` (garbage.py collects it once it is old enough, as
git prunes what an interrupted command left only after a grace period).
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from mnist_pipeline.core.atomic import write_bytes
from mnist_pipeline.core.errors import RegistryError
from mnist_pipeline.core.regular_file import NOT_REGULAR, NotRegularFile, read_regular
from mnist_pipeline.registry.storage import Storage, check_key

# link(2) on a file system without hard links (vfat: EPERM; others: ENOTSUP, EOPNOTSUPP; a FUSE
# file system without a link operation: ENOSYS)
NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS}

LOCK_TIMEOUT_S = 120.0
# create's ".NAME.HEX.tmp" and core.atomic's ".NAME.RANDOM.tmpSUFFIX" (an alias document's swap)
TEMP_NAME = re.compile(r"\..+\.tmp(\.[^./]+)?")


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _modified(path: Path) -> float | None:
    """The file's mtime; None when it is gone (its writer finished or gave up meanwhile)."""
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return None


class LocalFolder(Storage):
    """Objects as files under `root`; a key is a relative path."""

    def __init__(self, root: Path, role: str = "registry") -> None:
        self.root = Path(root)
        self.location = str(self.root)
        self.role = role  # what the folder holds, in messages: "registry", "shared inbox"

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def read(self, key: str) -> bytes | None:
        """The bytes of a regular file (links followed); a FIFO, device or socket in the store
        is refused, not waited on or read forever (`blobs/...` linked to /dev/zero)."""
        path = self._path(key)
        try:
            return read_regular(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except IsADirectoryError:
            raise RegistryError(f"{path} is a folder, expected a file") from None
        except NotRegularFile:
            raise RegistryError(f"{path} is {NOT_REGULAR}") from None

    def read_document(self, key: str) -> tuple[bytes, str] | None:
        data = self.read(key)
        return None if data is None else (data, hashlib.sha256(data).hexdigest())

    def create(self, key: str, data: bytes) -> bool:
        target = self._path(key)
        if target.exists():
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        try:
            try:
                with open(tmp, "xb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
            except OSError as exc:  # named by the key asked for, not the hidden temp file
                raise OSError(exc.errno, exc.strerror, str(target)) from None
            os.chmod(tmp, 0o444)
            try:
                os.link(tmp, target)
            except FileExistsError:
                return False
            except OSError as exc:
                if exc.errno not in NO_HARD_LINKS:
                    raise
                raise OSError(
                    exc.errno,
                    f"{exc.strerror}: this file system may have no hard links, which the "
                    "registry needs to create a file only if it is absent (vfat, some network "
                    "shares): put registry.root on a local disk, or on S3 (s3://bucket/prefix)",
                    str(target),
                ) from None
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(target.parent)
        return True

    def swap(self, key: str, data: bytes, revision: str | None) -> bool:
        target = self._path(key)
        with self.exclusive(f"{key}.swap"):
            current = self.read_document(key)
            if (None if current is None else current[1]) != revision:
                return False
            read_only = current is not None and not target.stat().st_mode & 0o222
            write_bytes(target, data)
            if read_only:  # a blob, as `create` left it: so again (an alias document is not)
                os.chmod(target, 0o444)
            _fsync_dir(target.parent)
        return True

    def delete_document(self, key: str, revision: str) -> bool:
        with self.exclusive(f"{key}.swap"):  # as `swap`: no other change in between
            current = self.read_document(key)
            if current is not None and current[1] != revision:
                return False
            self._path(key).unlink(missing_ok=True)
        return True

    def list(self, prefix: str) -> list[str]:
        folder, _, _ = prefix.rpartition("/")
        base = self.root / folder if folder else self.root
        if not base.is_dir():
            return []
        keys = []

        def unreadable(exc: OSError) -> None:  # a folder it cannot list is not an empty one
            if not isinstance(exc, FileNotFoundError):  # one removed meanwhile holds no keys
                raise exc

        for current, dirs, files in os.walk(base, onerror=unreadable):
            rel = Path(current).relative_to(self.root).as_posix()
            here = "" if rel == "." else f"{rel}/"
            # descend only where keys can still start with the prefix (as S3 lists by prefix)
            dirs[:] = [
                d
                for d in dirs
                if not d.startswith(".")
                and (f"{here}{d}/".startswith(prefix) or prefix.startswith(f"{here}{d}/"))
            ]
            keys += [
                here + f for f in files if not f.startswith(".") and (here + f).startswith(prefix)
            ]
        return sorted(keys)

    def _now(self, prefix: str) -> float:
        """The folder's clock: the mtime of a file written now under `prefix`'s folder (on a
        shared mount, the file server's time, so hosts need not agree on theirs; one a kill
        leaves there is `abandoned`); this host's clock where it cannot be written."""
        folder = self.root / prefix.rpartition("/")[0]
        probe = folder / f".clock.{uuid.uuid4().hex}.tmp"
        try:
            probe.touch(exist_ok=False)
            try:
                return probe.stat().st_mtime
            finally:
                probe.unlink(missing_ok=True)
        except OSError:
            return time.time()

    def renew(self, key: str) -> bool:
        path = self._path(key)
        try:
            os.utime(path)
        except FileNotFoundError:
            return False
        except PermissionError:  # another user's read-only file on a shared folder
            data = self.read(key)  # a regular file only: another user's pipe would block
            if data is None:
                return False
            try:
                write_bytes(path, data)  # the same bytes, a file of this user's (now young)
                os.chmod(path, 0o444)
            except PermissionError as exc:  # e.g. a folder with the sticky bit
                raise RegistryError(
                    f"{self.location}: cannot renew {key}, another user's file: this user may "
                    f"not replace it there ({exc.strerror}); registry folders shared by several "
                    "users need a group with write access to them and no sticky bit"
                ) from None
        return True

    def ages(self, prefix: str) -> dict[str, float]:
        now, ages = self._now(prefix), {}
        for key in self.list(prefix):
            if (written := _modified(self._path(key))) is not None:  # not removed meanwhile
                ages[key] = max(0.0, now - written)
        return ages

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def abandoned(self, prefix: str, older_than_s: float) -> list[str]:
        folder = self.root / check_key(prefix.rstrip("/"))
        expired, found = self._now(prefix) - older_than_s, []
        for current, dirs, files in os.walk(folder):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in files:
                path = Path(current) / name
                written = _modified(path) if TEMP_NAME.fullmatch(name) else None
                if written is not None and written <= expired:
                    found.append(path.relative_to(self.root).as_posix())
        return sorted(found)

    def remove_abandoned(self, name: str) -> None:
        folder, _, file = name.rpartition("/")
        if not (folder and check_key(folder) and TEMP_NAME.fullmatch(file)):
            raise RegistryError(f"{name!r} is not a partial write's name")
        (self.root / folder / file).unlink(missing_ok=True)

    @contextmanager
    def exclusive(self, key: str) -> Iterator[Callable[[], None]]:
        path = self._path(key)
        path = path.with_name(f".{path.name}.lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(path, timeout=LOCK_TIMEOUT_S)
        try:
            lock.acquire()
        except Timeout:
            raise RegistryError(
                f"{self.role} {self.location} is busy: lock {path} held for over "
                f"{LOCK_TIMEOUT_S:.0f} s by another process"
            ) from None
        try:
            yield lambda: None  # flock on a local disk holds while the file is open
        finally:
            lock.release()
