"""The MNIST file table and loading the fetched IDX files into tensors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from mnist_pipeline.core.contract import MNIST_MEAN, MNIST_STD
from mnist_pipeline.core.errors import DataError
from mnist_pipeline.core.regular_file import FileTooLarge, read_regular
from mnist_pipeline.data import idx
from mnist_pipeline.data.manifest import FILE_KINDS


@dataclass(frozen=True)
class Mnist:
    """The dataset as uint8 image tensors [N, 28, 28] and int64 label tensors [N]."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor


def parse_file(name: str, data: bytes) -> torch.Tensor:
    """Strictly parse one decompressed MNIST file by its kind."""
    if FILE_KINDS[name] == "images":
        return torch.from_numpy(idx.parse_images(data, name))
    return torch.from_numpy(idx.parse_labels(data, name)).long()


def _read(data_dir: Path, name: str) -> torch.Tensor:
    path = data_dir / name
    try:  # a pipe or a device: refused, not waited on; nor is a huge file read whole
        data = read_regular(path, idx.MAX_FILE_BYTES)
        return parse_file(name, data)
    except FileNotFoundError:
        raise DataError(f"missing dataset file {path}: run `mnist-pipeline fetch` first") from None
    except (DataError, FileTooLarge) as exc:  # damaged in place (a bad checkout, a copy cut short)
        why = exc.strerror if isinstance(exc, FileTooLarge) else exc
        raise DataError(
            f"{path} is not a valid MNIST file ({why}): run `mnist-pipeline fetch`, which "
            "replaces a file that does not verify"
        ) from None


def load_mnist(data_dir: Path) -> Mnist:
    """Load the four fetched files; images and labels must agree in count."""
    train_images = _read(data_dir, "train-images-idx3-ubyte")
    train_labels = _read(data_dir, "train-labels-idx1-ubyte")
    test_images = _read(data_dir, "t10k-images-idx3-ubyte")
    test_labels = _read(data_dir, "t10k-labels-idx1-ubyte")
    for split, images, labels in (
        ("train", train_images, train_labels),
        ("test", test_images, test_labels),
    ):
        if images.shape[0] != labels.shape[0]:
            raise DataError(
                f"{split}: {images.shape[0]} images but {labels.shape[0]} labels in {data_dir}"
            )
    return Mnist(train_images, train_labels, test_images, test_labels)


def require_test_images(mnist: Mnist, data_dir: Path, stage: str) -> Mnist:
    """`mnist` if its test split holds an image; else DataError: `stage` (evaluate, parity)
    would score nothing, and an empty split passes no honest check."""
    if not len(mnist.test_labels):
        raise DataError(
            f"{data_dir}: the test split holds no images, so {stage} has nothing to score; "
            "fetch the dataset again (`mnist-pipeline fetch`)"
        )
    return mnist


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 28, 28] -> float32 [N, 1, 28, 28], scaled to [0, 1] then standardised."""
    return ((images.float() / 255.0 - MNIST_MEAN) / MNIST_STD).unsqueeze(1)
