"""The four MNIST files and the SHA-256 of their decompressed content (torch-free)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from mnist_pipeline.core.errors import DataError
from mnist_pipeline.core.regular_file import open_regular


@dataclass(frozen=True)
class MnistFile:
    """One dataset file: its name (without .gz), kind, and decompressed SHA-256."""

    name: str
    kind: str  # "images" or "labels"
    sha256: str


# SHA-256 of the decompressed files; identical for every mirror (see ../shared/mnist/README.md).
MNIST_FILES = (
    MnistFile(
        "train-images-idx3-ubyte",
        "images",
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    ),
    MnistFile(
        "train-labels-idx1-ubyte",
        "labels",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    ),
    MnistFile(
        "t10k-images-idx3-ubyte",
        "images",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    ),
    MnistFile(
        "t10k-labels-idx1-ubyte",
        "labels",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ),
)
DEFAULT_SHA256 = {f.name: f.sha256 for f in MNIST_FILES}
FILE_KINDS = {f.name: f.kind for f in MNIST_FILES}


def dataset_sha256(data_dir: Path) -> str:
    """One content hash for the dataset: SHA-256 over 'name sha256' lines of the four files."""
    try:
        lines = "".join(f"{f.name} {file_sha256(data_dir / f.name)}\n" for f in MNIST_FILES)
    except FileNotFoundError as exc:
        missing = exc.filename
        raise DataError(f"missing dataset file {missing}: run `mnist-pipeline fetch`") from None
    return hashlib.sha256(lines.encode()).hexdigest()


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, streamed in 1 MiB chunks (a pipe or a device where the file
    belongs is refused, not waited on or read without end)."""
    digest = hashlib.sha256()
    handle, _ = open_regular(path)
    with handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
