"""Per-image answers for the promotion comparison (torch-free).

The candidate's on MNIST test come from evaluate's predictions CSV (only the one its
metrics.json records the SHA-256 of); any model's on a labelled set come from its model.onnx
through onnxruntime, the way production is scored on MNIST test and both on the extra holdout.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist_pipeline.core.contract import INPUT_NAME, LOGITS
from mnist_pipeline.core.errors import DataError, RegistryError
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.reports import Metrics
from mnist_pipeline.data import idx
from mnist_pipeline.evaluation import gate
from mnist_pipeline.export.session import model_input, open_session, run_model
from mnist_pipeline.inbox.extra import Split

PREDICTIONS_OUTPUT = Layout().predictions.as_posix()  # its key in metrics.json's outputs
TEST_FILES = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
BATCH = 1000


@dataclass(frozen=True)
class MnistAnswers:
    """The candidate's per-image correctness on MNIST test (bool [N]) and that test set."""

    test: Split
    correct: np.ndarray


def onnx_correct(onnx: bytes, images: Split, where: str) -> np.ndarray:
    """Which images (bool [N]) the ONNX model classifies correctly."""
    session = open_session(onnx, where=where, outputs=(LOGITS,))
    predicted = [
        run_model(
            session, [LOGITS], {INPUT_NAME: model_input(images.images[i : i + BATCH])}, where
        )[0]
        for i in range(0, len(images), BATCH)
    ]
    if not predicted:
        return np.zeros(0, bool)
    return np.concatenate(predicted).argmax(axis=1) == images.labels


def mnist_test(data_dir: Path) -> Split:
    """MNIST's test images and labels from the fetched IDX files in `data_dir`."""
    try:
        images, labels = ((data_dir / name).read_bytes() for name in TEST_FILES)
    except FileNotFoundError as exc:
        raise DataError(
            f"missing dataset file {exc.filename}: run `mnist-pipeline fetch`"
        ) from None
    images = idx.parse_images(images, TEST_FILES[0])
    labels = idx.parse_labels(labels, TEST_FILES[1])
    if len(images) != len(labels):
        raise DataError(f"test: {len(images)} images but {len(labels)} labels in {data_dir}")
    return Split(images, labels.astype(np.int64))


def parse_predictions(data: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(actual, predicted) int arrays from evaluate's CSV (index,actual,predicted,confidence)."""
    try:
        rows = list(csv.DictReader(io.StringIO(data.decode("utf-8"))))
        pairs = [(int(r["actual"]), int(r["predicted"])) for r in rows]
        indexes = [int(r["index"]) for r in rows]
    except (UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
        raise RegistryError(f"{where} is not evaluate's predictions CSV ({exc})") from None
    if indexes != list(range(len(rows))):
        raise RegistryError(f"{where}: rows are not the test images in order")
    both = np.array(pairs, dtype=np.int64).reshape(-1, 2)
    return both[:, 0], both[:, 1]


def candidate_answers(predictions: Path, data_dir: Path | None, metrics: Metrics) -> MnistAnswers:
    """The candidate's per-image correctness on MNIST test, from the predictions CSV its
    metrics.json names (GateError for another file), checked against the test set itself."""
    if data_dir is None:
        raise RegistryError("the candidate has predictions but no MNIST folder (data_dir)")
    try:
        data = predictions.read_bytes()
    except OSError as exc:
        raise RegistryError(f"cannot read {predictions}: {exc.strerror}") from None
    recorded = (metrics.outputs or {}).get(PREDICTIONS_OUTPUT)
    if recorded is None:
        raise RegistryError(
            f"metrics.json records no {PREDICTIONS_OUTPUT}: run `mnist-pipeline evaluate`"
        )
    found = {PREDICTIONS_OUTPUT: hashlib.sha256(data).hexdigest()}
    gate.outputs_made_with({PREDICTIONS_OUTPUT: recorded}, found, "metrics.json", "evaluate")
    actual, predicted = parse_predictions(data, str(predictions))
    test = mnist_test(data_dir)
    correct = predicted == actual
    if not np.array_equal(actual, test.labels) or int(correct.sum()) != metrics.correct:
        raise RegistryError(
            f"{predictions} does not describe the MNIST test set in {data_dir} with "
            f"metrics.json's {metrics.correct}/{metrics.total}: run `mnist-pipeline evaluate`"
        )
    return MnistAnswers(test, correct)
