"""The inbox of labelled digits for training (`mnist-pipeline data add`; `data accept` of what
the server's /feedback quarantined in data/pending/).

    data/extra/<label>/<sha256>.<format>     one image, named by the SHA-256 of its bytes

Adding validates the image as `predict` would read it (decodable, within the pixel limit, not
blank), names it by its content, and writes it atomically under a lock: the same image added
twice is stored once, and the same image with two different labels is a conflict, refused with
both labels named. Files dropped into `data/extra/<digit>/` by hand (any names) are listed too.
Torch-free.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock
from PIL import Image

from mnist_pipeline.core.atomic import write_bytes
from mnist_pipeline.core.contract import CLASS_LABELS
from mnist_pipeline.core.errors import DataError
from mnist_pipeline.core.regular_file import NOT_REGULAR, FileTooLarge, NotRegularFile, read_regular
from mnist_pipeline.data.manifest import file_sha256
from mnist_pipeline.data.preprocess import MAX_PIXELS, ImageError, preprocess_bytes

MAX_FILE_BYTES = 10_000_000


def lock(inbox: Path) -> FileLock:
    """The inbox's lock, beside it (data/.extra.lock): inside, DVC would hash it with the images."""
    inbox.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(inbox.parent / f".{inbox.name}.lock", timeout=60)


class LabelConflict(DataError):
    """The image is already in the inbox under another label."""


@dataclass(frozen=True)
class Entry:
    """One labelled image in the inbox."""

    label: int
    path: Path
    sha256: str

    def to_dict(self) -> dict[str, object]:
        return {"label": self.label, "path": str(self.path), "sha256": self.sha256}


@dataclass(frozen=True)
class Added:
    """What `add` did with one image: stored it, or found it already there (`here` False: an
    image accepted into the shared inbox that did not reach this host's inbox yet)."""

    entry: Entry
    new: bool
    here: bool = True


def check_label(label: object) -> int:
    """The digit `label` names (an int or a string "0".."9"); DataError otherwise."""
    text = str(label).strip()
    if text not in CLASS_LABELS:
        raise DataError(f"label must be one digit 0-9, got {label!r}")
    return int(text)


def entries(inbox: Path) -> list[Entry]:
    """Every image in the inbox, by label then name (files in other folders are ignored; a file
    another command removes while this one reads is left out, as if listed a moment later)."""
    return hashed(listing(inbox)[0])


class Listing:
    """The inbox's entries for a command that adds many images: each `entries()` lists the
    folders again (under the caller's lock: current) but hashes only the files that are new or
    changed (size, modification time) since its last call, so the inbox is hashed once for
    the command, not once per image, and the lock is held per image, not for all of them."""

    def __init__(self, inbox: Path) -> None:
        self.inbox = inbox
        self._known: dict[tuple[str, int, int], str] = {}

    def entries(self) -> list[Entry]:
        found, known = [], {}
        for label, path in listing(self.inbox)[0]:
            try:
                info = path.stat()
                key = (str(path), info.st_size, info.st_mtime_ns)
                known[key] = self._known.get(key) or file_sha256(path)
            except FileNotFoundError:  # removed meanwhile: as if listed a moment later
                continue
            found.append(Entry(label, path, known[key]))
        self._known = known
        return found

    def note(self, entry: Entry) -> None:
        """An image just stored by this command: known, not hashed again."""
        info = entry.path.stat()
        self._known[str(entry.path), info.st_size, info.st_mtime_ns] = entry.sha256


def hashed(listed: list[tuple[int, Path]]) -> list[Entry]:
    """The entries of `listing`'s (label, path) pairs, each file hashed (one removed
    meanwhile is left out)."""
    found = []
    for label, path in listed:
        try:
            found.append(Entry(label, path, file_sha256(path)))
        except FileNotFoundError:
            continue
    return found


def listing(inbox: Path) -> tuple[list[tuple[int, Path]], list[Path]]:
    """(label, path) of the files in digit folders, by label then name, and every other entry
    under the inbox (misplaced: not in a data/extra/<0-9>/ folder, or no regular file there: a
    pipe, a device, a link to a folder); nothing is read. Hidden files and links that lead
    nowhere are neither."""
    found: list[tuple[int, Path]] = []
    misplaced: list[Path] = []
    if not inbox.is_dir():
        return found, misplaced
    # each top-level entry walked from itself: a digit folder that is a symbolic link to a
    # folder is read like any other (`find` and `add` reach into it; `rglob` would not)
    for top in sorted(inbox.iterdir()):
        for path in [top] if not top.is_dir() else sorted(top.rglob("*")):
            rel = path.relative_to(inbox)
            if any(part.startswith(".") for part in rel.parts):
                continue
            if not path.is_file():  # a folder rglob walks, a link to nowhere: nothing to read
                if path.exists() and (path.is_symlink() or not path.is_dir()):
                    misplaced.append(path)  # a pipe, a device, a link to a folder: refused
                continue
            if len(rel.parts) == 2 and rel.parts[0] in CLASS_LABELS:
                found.append((int(rel.parts[0]), path))
            else:
                misplaced.append(path)
    found.sort(key=lambda item: (item[0], item[1].name))
    return found, misplaced


def inbox_sha256(found: list[Entry]) -> str:
    """Content identity of the inbox: its (label, image SHA-256) pairs, not the file names."""
    lines = sorted(f"{e.label} {e.sha256}\n" for e in found)
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def validate(data: bytes, name: str, label: object) -> tuple[int, str, str]:
    """(digit, SHA-256, format suffix) of an image `add` would store; DataError naming `name`."""
    digit = check_label(label)
    if len(data) > MAX_FILE_BYTES:
        raise DataError(f"{name}: {len(data):,} bytes, over the limit of {MAX_FILE_BYTES:,}")
    try:
        preprocess_bytes(data, name, MAX_PIXELS)  # what training will do with it
        suffix = image_format(data)
    except ImageError as exc:
        raise DataError(str(exc)) from None
    return digit, hashlib.sha256(data).hexdigest(), suffix


def add(
    inbox: Path,
    data: bytes,
    name: str,
    label: object,
    *,
    locked: bool = False,
    listed: Listing | None = None,
) -> Added:
    """Store one image (`data`, called `name` in messages) under `label` (`locked`: the caller
    already holds `lock(inbox)`; `listed`: the inbox's Listing of a caller adding many)."""
    checked = validate(data, name, label)
    inbox.mkdir(parents=True, exist_ok=True)
    with contextlib.nullcontext() if locked else lock(inbox):
        present = None if listed is None else listed.entries()
        entry, new = _placed(inbox, name, *checked, present)
        if new:
            write_bytes(entry.path, data)
            if listed is not None:
                listed.note(entry)
    return Added(entry, new)


def placed(
    inbox: Path, data: bytes, name: str, label: object, present: list[Entry] | None = None
) -> Entry:
    """Where `add` would store the image (or finds it stored), checked as `add` checks it
    (DataError, LabelConflict) without writing: for a caller that checks every image before
    it adds any (without `lock(inbox)` held, another command may change the inbox meanwhile:
    `add` checks again under it); `present` as for `find`."""
    return _placed(inbox, name, *validate(data, name, label), present)[0]


def _placed(
    inbox: Path, name: str, digit: int, digest: str, suffix: str, present: list[Entry] | None
) -> tuple[Entry, bool]:
    """(the entry, whether it is new) of a validated image."""
    found = find(inbox, digest, present)
    if found is not None:
        if found.label != digit:
            raise LabelConflict(
                f"{name}: this image is already in the inbox labelled {found.label} "
                f"({found.path}); remove it first to label it {digit}"
            )
        return found, False
    path = inbox / str(digit) / f"{digest}.{suffix}"
    check_free(path, digest)
    return Entry(digit, path, digest), True


def check_free(path: Path, digest: str) -> None:
    """DataError when the file named for image `digest` holds other bytes (edited in place): it
    is the only copy of that other image, never written over."""
    if path.exists():  # not this image, or `find` had found it there
        raise DataError(
            f"{path} holds other bytes than the image its name says ({digest[:12]}): edited in "
            "place? It is not replaced; move it out of the inbox and add it again"
        )


def find(inbox: Path, digest: str, present: list[Entry] | None = None) -> Entry | None:
    """The inbox's entry of the image with this SHA-256 (None: not there): first by the name
    `add` gives it, and only then by hashing every file (hand-dropped files have any names), or
    among `present`, the caller's `entries(inbox)` (one scan for many images)."""
    named = find_named(inbox, digest)
    if named is not None:
        return named
    listed = entries(inbox) if present is None else present
    return next((entry for entry in listed if entry.sha256 == digest), None)


def find_named(inbox: Path, digest: str) -> Entry | None:
    """The inbox's entry of the image with this SHA-256 under the name `add` (and so accept
    and sync) gives it, `<digit>/<sha256>.<format>`, its content checked; None: not so named."""
    named = sorted(inbox.glob(f"*/{digest}.*")) if inbox.is_dir() else []
    for path in named:
        folder = path.parent.name
        try:
            if folder in CLASS_LABELS and path.is_file() and file_sha256(path) == digest:
                return Entry(int(folder), path, digest)
        except FileNotFoundError:
            continue  # removed by another command meanwhile
    return None


def read_file(path: Path) -> bytes:
    """The bytes of an image file a user named (errors name it). Only a regular file of at most
    MAX_FILE_BYTES is read: a device, a pipe or an oversized file is refused before reading
    (core.regular_file: checked as opened, so a pipe swapped in after a check cannot block)."""
    try:
        return read_regular(path, MAX_FILE_BYTES)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: a folder, not an image file") from None
    except NotRegularFile:
        raise DataError(f"{path}: {NOT_REGULAR}") from None
    except FileTooLarge as exc:
        raise DataError(
            f"{path}: {exc.size:,} bytes, over the limit of {MAX_FILE_BYTES:,}"
        ) from None


def image_format(data: bytes) -> str:
    """The file suffix `add` gives an image (its format, lower case; "img" when unknown; a
    multi-picture JPEG, as some cameras write, is a JPEG)."""
    with Image.open(io.BytesIO(data)) as image:
        found = (image.format or "img").lower()
    return "jpeg" if found == "mpo" else found
