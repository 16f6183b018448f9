"""Verified local copies of registry files, in a cache folder outside any store, keyed by the
SHA-256 of their bytes (so two versions sharing a file share its copy)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from mnist_pipeline.core.atomic import write_bytes
from mnist_pipeline.core.errors import RegistryError
from mnist_pipeline.core.regular_file import NotRegularFile, read_regular


def default_cache() -> Path:
    """Where verified copies go: $XDG_CACHE_HOME (or ~/.cache)/mnist-pipeline/blobs."""
    base = os.environ.get("XDG_CACHE_HOME")
    if not base:
        try:
            base = Path.home() / ".cache"
        except RuntimeError:  # no HOME and no passwd entry (some containers)
            raise RegistryError(
                "no home folder for the cache of verified model copies: set XDG_CACHE_HOME "
                "(or HOME)"
            ) from None
    return Path(base) / "mnist-pipeline" / "blobs"


def verified_copy(cache: Path, sha256: str, read: Callable[[], bytes]) -> Path:
    """The copy named `sha256` in `cache`, re-hashed now; written afresh (atomically) from
    `read()`, which verifies what it reads, when it is missing, damaged or not a file."""
    copy = cache / sha256
    try:
        if hashlib.sha256(read_regular(copy)).hexdigest() == sha256:
            return copy
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, NotRegularFile):
        pass  # made below (a folder in its place: the write names it)
    data = read()
    if hashlib.sha256(data).hexdigest() != sha256:  # read() checked a card read since
        raise RegistryError(f"{copy.name[:12]}: the bytes read are not the ones named {sha256}")
    write_bytes(copy, data)
    return copy
