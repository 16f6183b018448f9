"""Tiny, learnable, MNIST-shaped data written as real IDX files (tests never download)."""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np

from mnist_pipeline.data.manifest import MNIST_FILES


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array as an IDX file (magic 0x0000 08 NDIM, big-endian dims)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def digit_images(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """28x28 uint8 images whose class is easy to learn: a bright block at a class-specific spot."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 40, size=(len(labels), 28, 28), dtype=np.uint8)
    for i, label in enumerate(labels):
        row, col = 4 + 10 * (label // 5), 2 + 5 * (label % 5)
        dr, dc = rng.integers(-1, 2, size=2)
        images[i, row + dr : row + dr + 8, col + dc : col + dc + 4] = 255
    return images


def make_dataset(n_train: int = 256, n_test: int = 128, seed: int = 0) -> dict[str, bytes]:
    """The four decompressed files (name -> IDX bytes) of a tiny synthetic dataset."""
    rng = np.random.default_rng(seed)
    train_labels = rng.integers(0, 10, size=n_train, dtype=np.uint8)
    test_labels = rng.integers(0, 10, size=n_test, dtype=np.uint8)
    return {
        "train-images-idx3-ubyte": idx_bytes(digit_images(train_labels, seed + 1)),
        "train-labels-idx1-ubyte": idx_bytes(train_labels),
        "t10k-images-idx3-ubyte": idx_bytes(digit_images(test_labels, seed + 2)),
        "t10k-labels-idx1-ubyte": idx_bytes(test_labels),
    }


def write_mirror(folder: Path, files: dict[str, bytes], gz: bool = True) -> dict[str, str]:
    """Serve `files` from a directory mirror (gzipped or not); returns name -> sha256."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}


def write_data_dir(folder: Path, files: dict[str, bytes]) -> None:
    """Place already-fetched (decompressed) files, as `fetch` leaves them."""
    folder.mkdir(parents=True, exist_ok=True)
    assert {f.name for f in MNIST_FILES} == set(files)
    for name, data in files.items():
        (folder / name).write_bytes(data)
