"""The drift reference a version is registered with (torch-free): what its answers and the
images looked like on MNIST test, for the server's drift monitor (monitoring/drift.py).

Measured from evaluate's per-image answers (the predictions CSV that metrics.json records, so
the model's own digits and confidences) and the MNIST test images they were made on, scaled to
[0, 1] as the ONNX contract feeds them. A candidate without predictions, or whose MNIST test
files are gone, gets no reference (logged): its version is registered, and not monitored.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging

import numpy as np

from mnist_pipeline.core.errors import RegistryError
from mnist_pipeline.core.reports import Metrics
from mnist_pipeline.evaluation import gate
from mnist_pipeline.monitoring import drift
from mnist_pipeline.pipeline.candidate import Candidate
from mnist_pipeline.pipeline.evidence import PREDICTIONS_OUTPUT, TEST_FILES, mnist_test

log = logging.getLogger(__name__)


def parse_answers(data: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(predicted, confidence) arrays from evaluate's CSV (index,actual,predicted,confidence)."""
    try:
        rows = list(csv.DictReader(io.StringIO(data.decode("utf-8"))))
        predicted = np.array([int(r["predicted"]) for r in rows], dtype=np.int64)
        confidence = np.array([float(r["confidence"]) for r in rows], dtype=np.float64)
        in_order = [int(r["index"]) for r in rows] == list(range(len(rows)))
    except (UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
        raise RegistryError(f"{where} is not evaluate's predictions CSV ({exc})") from None
    if not in_order:
        raise RegistryError(f"{where}: rows are not the test images in order")
    return predicted, confidence


def drift_reference(candidate: Candidate, metrics: Metrics) -> bytes | None:
    """The reference file's bytes for `candidate` (None without predictions or test files);
    RegistryError when its predictions are not the ones metrics.json records for the test set."""
    if candidate.predictions is None or candidate.data_dir is None:
        return None
    if not all((candidate.data_dir / name).is_file() for name in TEST_FILES):
        log.warning(
            "no MNIST test set in %s: registered without a drift reference", candidate.data_dir
        )
        return None
    where = str(candidate.predictions)
    try:
        data = candidate.predictions.read_bytes()
    except OSError as exc:
        raise RegistryError(f"cannot read {where}: {exc.strerror}") from None
    recorded = (metrics.outputs or {}).get(PREDICTIONS_OUTPUT)
    if recorded is None:
        return None  # metrics.json from before predictions were recorded: no reference
    found = {PREDICTIONS_OUTPUT: hashlib.sha256(data).hexdigest()}
    gate.outputs_made_with({PREDICTIONS_OUTPUT: recorded}, found, "metrics.json", "evaluate")
    predicted, confidence = parse_answers(data, where)
    test = mnist_test(candidate.data_dir)
    if len(predicted) != len(test):
        raise RegistryError(
            f"{where} has {len(predicted)} answers for {len(test)} MNIST test images in "
            f"{candidate.data_dir}: run `mnist-pipeline evaluate`"
        )
    images = test.images.astype(np.float32) / 255.0
    return drift.reference(images, predicted, confidence).to_bytes()
