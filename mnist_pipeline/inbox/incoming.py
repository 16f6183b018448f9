"""Images a sync downloads before it takes the inbox's lock, staged on disk beside the inbox.

    data/.extra.incoming/<sha256>    the bytes of one image from the shared inbox, checked

A sync (sync.py) reads the store without holding the inbox's lock: the images this folder lacks
are downloaded here, READERS at a time, each checked against its SHA-256 and written atomically,
so memory holds one image per reader and a download cut short by a store going down keeps what
it got for the next sync. Under the lock the sync moves each one it still wants into the inbox
(a rename; a copy where the inbox is a link to another filesystem) and then empties the
folder. Nothing here is training data: ingest reads the inbox.
"""

from __future__ import annotations

import errno
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mnist_pipeline.core.atomic import write_bytes
from mnist_pipeline.core.errors import DataError
from mnist_pipeline.data.manifest import file_sha256
from mnist_pipeline.inbox.shared import READERS, Record, SharedInbox, StoreUnavailable
from mnist_pipeline.inbox.store import check_free

Staged = dict[str, Path | DataError]  # record.image -> the staged file, or why it is not there


def folder(inbox: Path) -> Path:
    """data/.extra.incoming: beside the inbox (inside, DVC would hash it with the images)."""
    return inbox.parent / f".{inbox.name}.incoming"


def target(inbox: Path, sha: str, record: Record) -> Path:
    """Where the inbox keeps the image `record` describes."""
    return inbox / str(record.label) / f"{sha}.{record.format}"


def prefetch(
    shared: SharedInbox, inbox: Path, remote: dict[str, Record], here: set[tuple[str, int]]
) -> Staged:
    """Stage each image of `remote` that the inbox lacks with the store's label: neither at
    its own path nor in `here` (SHA-256 and label of the files here, hashed before the lock: a
    file dropped in by hand and published keeps its own name); one staged by an earlier sync is
    kept when it is whole. StoreUnavailable stops it, keeping what was staged."""
    wanted = [
        (sha, r)
        for sha, r in sorted(remote.items())
        if (sha, r.label) not in here and not target(inbox, sha, r).exists()
    ]
    staging = folder(inbox)

    def stage(item: tuple[str, Record]) -> Path | DataError | None:
        sha, record = item
        path = staging / sha
        try:
            if path.is_file() and file_sha256(path) == sha:
                return path
            write_bytes(path, shared.image(sha, record))
            return path
        except StoreUnavailable:
            raise
        except DataError as exc:  # an altered or missing image: reported where it is synced
            return exc
        except OSError:  # here (another sync emptied the folder, a full disk): not staged
            return None

    with ThreadPoolExecutor(READERS) as pool:
        found = zip(wanted, pool.map(stage, wanted), strict=True)
        return {record.image: got for (_, record), got in found if got is not None}


def take(shared: SharedInbox, inbox: Path, sha: str, record: Record, staged: Staged) -> None:
    """Put the image `record` describes into the inbox: its staged file, or downloaded now (it
    was not staged: the inbox had it, or the store changed meanwhile)."""
    found = staged.get(record.image)
    if isinstance(found, DataError):
        raise found
    path = target(inbox, sha, record)
    check_free(path, sha)  # the inbox lacks it: a file of that name is another image
    if found is not None and found.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(found, path)
        except OSError as exc:  # an inbox linked to another filesystem: copied there instead
            if exc.errno != errno.EXDEV:
                raise
            write_bytes(path, found.read_bytes())
    else:
        write_bytes(path, shared.image(sha, record))


def clear(inbox: Path) -> None:
    """Remove what a finished sync did not take (images retracted or relabelled meanwhile)."""
    shutil.rmtree(folder(inbox), ignore_errors=True)
