"""Reading a file that a user, or another host, may have replaced by something else.

`Path.read_bytes()` on a named pipe waits for a writer that may never come, on a link to
/dev/zero reads until memory runs out, and on a folder names the file descriptor. `read_regular`
opens without waiting, checks what it opened (not the path, which could be swapped between a
check and the open) and reads at most `limit` bytes; every refusal is an OSError naming the
path, which the callers already turn into their own one-line errors. `open_regular` makes the
same checks and hands over the open file, for readers that stream (np.load of a cache file).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

NOT_REGULAR = "not a regular file (a device, pipe or socket)"


class NotRegularFile(OSError):
    """A device, pipe or socket where a file was expected."""


class FileTooLarge(OSError):
    """A file larger than its reader takes: `size` bytes (at least), over `limit`."""

    size = limit = 0

    @classmethod
    def of(cls, size: int, limit: int, path: Path | str) -> FileTooLarge:
        found = cls(
            errno.EFBIG, f"{size:,} bytes, more than the {limit:,} this file may hold", str(path)
        )
        found.size, found.limit = size, limit
        return found


def open_regular(path: Path | str, limit: int | None = None) -> tuple[BinaryIO, os.stat_result]:
    """`path` opened for reading, and its status as opened: IsADirectoryError for a folder,
    NotRegularFile for a device, pipe or socket, FileTooLarge over `limit` bytes (None: no
    bound). The caller closes the file."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a pipe: refused below, not waited on
    try:
        found = os.fstat(fd)
        if stat.S_ISDIR(found.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        if not stat.S_ISREG(found.st_mode):
            raise NotRegularFile(errno.EINVAL, NOT_REGULAR, str(path))
        if limit is not None and found.st_size > limit:
            raise FileTooLarge.of(found.st_size, limit, path)
        return os.fdopen(fd, "rb"), found
    except BaseException:
        os.close(fd)
        raise


def read_regular_stat(path: Path | str, limit: int | None = None) -> tuple[bytes, os.stat_result]:
    """`path`'s bytes and its status as opened (refused as by open_regular), at most `limit`
    bytes even when it grows while it is read."""
    opened, found = open_regular(path, limit)
    with opened:
        data = opened.read() if limit is None else opened.read(limit + 1)
    if limit is not None and len(data) > limit:  # grown since fstat
        raise FileTooLarge.of(len(data), limit, path)
    return data, found


def read_regular(path: Path | str, limit: int | None = None) -> bytes:
    """`path`'s bytes (read_regular_stat without the status)."""
    return read_regular_stat(path, limit)[0]
