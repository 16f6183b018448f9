"""The ingested extra data: labelled digits users added, as MNIST-style IDX files (torch-free).

    data/ingested/train-images-idx3-ubyte     uint8 [N, 28, 28], white digit on black
    data/ingested/train-labels-idx1-ubyte     uint8 [N]
    data/ingested/holdout-images-idx3-ubyte   the share held out for evaluation
    data/ingested/holdout-labels-idx1-ubyte
    data/ingested/manifest.json               per image: SHA-256, label, source, split
    data/ingested/checksums.json              the SHA-256 of each file above

Written by the ingest stage (ingest.py), read by train and evaluate. No folder means no extra
data (training on MNIST alone). The files replace the last ingest's one by one, checksums.json
first: a file that is not the one it names (an ingest interrupted between two renames left
images of one ingest beside labels of another) is refused when read.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist_pipeline.core import json_text
from mnist_pipeline.core.contract import IMAGE_SIZE
from mnist_pipeline.core.errors import DataError
from mnist_pipeline.core.regular_file import read_regular
from mnist_pipeline.data import idx

SPLITS = ("train", "holdout")
MANIFEST_FILE = "manifest.json"
CHECKSUMS_FILE = "checksums.json"
NO_EXTRA_SHA256 = "none"  # the fingerprint's extra-data identity when there is none


def images_file(split: str) -> str:
    return f"{split}-images-idx3-ubyte"


def labels_file(split: str) -> str:
    return f"{split}-labels-idx1-ubyte"


def data_files() -> tuple[str, ...]:
    """The four IDX files, in a fixed order (the identity hashes them in it)."""
    return tuple(name for split in SPLITS for name in (images_file(split), labels_file(split)))


@dataclass(frozen=True)
class Split:
    """One split of the extra data: uint8 images [N, 28, 28] and labels [N]."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def empty(cls) -> Split:
        shape = (0, IMAGE_SIZE, IMAGE_SIZE)
        return cls(np.zeros(shape, np.uint8), np.zeros(0, np.uint8))


def ingested(extra_dir: Path) -> bool:
    """Whether `extra_dir` holds an ingest's output; DataError when it is something else (a
    file read as "no labelled digits" would train without them)."""
    if extra_dir.is_dir():
        return True
    if extra_dir.exists() or extra_dir.is_symlink():
        what = "a file" if extra_dir.exists() else "a broken link"
        raise DataError(
            f"{extra_dir}: {what}, where `mnist-pipeline ingest` writes a folder: remove it "
            "and run `mnist-pipeline ingest`"
        )
    return False


def read_split(extra_dir: Path, split: str) -> Split:
    """One split of the ingested data; an empty split when `extra_dir` does not exist."""
    if not ingested(extra_dir):
        return Split.empty()
    return _read_split(extra_dir, split, {})


def _read_split(extra_dir: Path, split: str, read: dict[str, bytes]) -> Split:
    """`read_split` of an ingest's folder; the bytes of its two files, as read and checked, are
    added to `read` (file name -> bytes)."""
    try:  # a file checksums.json does not name is DataError naming it and what to run
        for name in (images_file(split), labels_file(split)):
            read[name] = checked(extra_dir, name)
    except FileNotFoundError as exc:
        raise DataError(f"missing {exc.filename}: run `mnist-pipeline ingest`") from None
    try:
        images = idx.parse_images(read[images_file(split)], images_file(split))
        labels = idx.parse_labels(read[labels_file(split)], labels_file(split))
    except DataError as exc:  # names the file only
        raise DataError(f"{extra_dir}: {exc}: run `mnist-pipeline ingest` again") from None
    if images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE) or len(images) != len(labels):
        raise DataError(
            f"{extra_dir}: {split} has images {images.shape} and {len(labels)} labels "
            f"(expected [N, {IMAGE_SIZE}, {IMAGE_SIZE}] and N): run `mnist-pipeline ingest`"
        )
    return Split(images, labels)


def checksums(contents: dict[str, bytes]) -> bytes:
    """checksums.json for the files `contents` (name -> bytes) an ingest writes."""
    named = {name: hashlib.sha256(data).hexdigest() for name, data in sorted(contents.items())}
    return (json.dumps(named, indent=2) + "\n").encode()


def checked(extra_dir: Path, name: str) -> bytes:
    """The bytes of `extra_dir`/`name`; DataError when checksums.json names other bytes for it
    (an interrupted ingest). A folder without checksums.json (an older ingest) is not checked."""
    try:
        recorded = json_text.loads(read_regular(extra_dir / CHECKSUMS_FILE)).get(name)
    except FileNotFoundError:
        return read_regular(extra_dir / name)
    except (OSError, ValueError, AttributeError) as exc:
        raise DataError(f"{extra_dir / CHECKSUMS_FILE} is unreadable ({exc})") from None
    try:
        data = read_regular(extra_dir / name)
    except FileNotFoundError:
        if recorded is None:
            raise
        raise DataError(f"missing {extra_dir / name}: run `mnist-pipeline ingest`") from None
    if recorded != hashlib.sha256(data).hexdigest():
        raise DataError(
            f"{extra_dir / name} is not the file the last ingest wrote (checksums.json names "
            "another): an ingest was interrupted while it replaced the files (or an earlier "
            "release's ingest rewrote them); run `mnist-pipeline ingest`"
        )
    return data


def extra_sha256(extra_dir: Path) -> str:
    """One content hash of the ingested data (its four IDX files), or NO_EXTRA_SHA256 when
    there is none: empty splits hash like a missing folder, so an empty inbox changes nothing."""
    if not ingested(extra_dir):
        return NO_EXTRA_SHA256
    read: dict[str, bytes] = {}  # hashed as read and checked: an ingest meanwhile changes nothing
    splits = [_read_split(extra_dir, split, read) for split in SPLITS]  # none skipped
    if all(len(split) == 0 for split in splits):
        return NO_EXTRA_SHA256
    return _combined({name: hashlib.sha256(read[name]).hexdigest() for name in data_files()})


def extra_sha256_of(contents: dict[str, bytes]) -> str:
    """`extra_sha256` of the IDX files `contents` (file name -> bytes) before they are written;
    `contents` with no image in any split hash as NO_EXTRA_SHA256."""
    if all(idx.parse_labels(contents[labels_file(s)]).size == 0 for s in SPLITS):
        return NO_EXTRA_SHA256
    return _combined({name: hashlib.sha256(contents[name]).hexdigest() for name in data_files()})


def _combined(hashes: dict[str, str]) -> str:
    lines = "".join(f"{name} {hashes[name]}\n" for name in data_files())
    return hashlib.sha256(lines.encode()).hexdigest()


def split_sha256(split: Split) -> str:
    """Content hash of one split (labels and pixels): what a score on it was measured on."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(split.labels, np.uint8).tobytes())
    digest.update(np.ascontiguousarray(split.images, np.uint8).tobytes())
    return digest.hexdigest()
