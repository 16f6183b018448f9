"""Confusion matrix, per-class precision/recall/F1 and accuracy on hand-made labels."""

from __future__ import annotations

import pytest
import torch

from mnist_pipeline.evaluation import metrics
from mnist_pipeline.evaluation.metrics import accuracy, confusion_matrix, per_class

ACTUAL = torch.tensor([0, 0, 1, 2, 2, 2])
PREDICTED = torch.tensor([0, 1, 1, 2, 0, 2])


def test_confusion_matrix_rows_are_true_labels() -> None:
    matrix = confusion_matrix(ACTUAL, PREDICTED, num_classes=3)
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    assert matrix.dtype == torch.int64


def test_default_is_ten_classes() -> None:
    matrix = confusion_matrix(torch.tensor([9, 3]), torch.tensor([9, 4]))
    assert matrix.shape == (10, 10)
    assert matrix[9, 9] == 1 and matrix[3, 4] == 1 and matrix.sum() == 2


def test_per_class_precision_recall_f1_support() -> None:
    stats = per_class(confusion_matrix(ACTUAL, PREDICTED, num_classes=3))
    assert list(stats) == ["0", "1", "2"]
    assert stats["0"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert stats["1"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert stats["2"] == pytest.approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3})
    assert all(isinstance(s["support"], int) for s in stats.values())


def test_absent_and_never_predicted_classes_score_zero() -> None:
    stats = per_class(confusion_matrix(torch.tensor([0, 0]), torch.tensor([0, 1]), num_classes=3))
    assert stats["2"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert stats["1"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_accuracy() -> None:
    assert accuracy(confusion_matrix(ACTUAL, PREDICTED, num_classes=3)) == pytest.approx(4 / 6)
    empty = torch.tensor([], dtype=torch.int64)
    assert accuracy(confusion_matrix(empty, empty)) == 0.0


@pytest.mark.parametrize(
    ("actual", "predicted", "match"),
    [
        (torch.tensor([0, 1]), torch.tensor([0]), "equal in shape"),
        (torch.tensor([0, 10]), torch.tensor([0, 1]), "actual labels must lie in 0..9"),
        (torch.tensor([0, 1]), torch.tensor([-1, 1]), "predicted labels must lie in 0..9"),
    ],
)
def test_bad_inputs(actual: torch.Tensor, predicted: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        confusion_matrix(actual, predicted)


def test_calibration_error_is_the_gap_between_confidence_and_accuracy() -> None:
    confident = torch.full((10,), 0.9)
    right = torch.tensor([True] * 9 + [False])
    assert metrics.calibration(confident, right)["ece"] == pytest.approx(0.0, abs=1e-6)
    half = torch.tensor([True] * 5 + [False] * 5)
    report = metrics.calibration(confident, half)
    assert report["ece"] == pytest.approx(0.4)
    assert [(row["count"], row["accuracy"]) for row in report["table"]] == [(10, 0.5)]
    # Two bins, weighted by their counts; a confidence of exactly 1.0 is in the last bin.
    mixed = metrics.calibration(torch.tensor([1.0, 1.0, 0.5, 0.5]), torch.tensor([1, 1, 1, 0]))
    assert mixed["ece"] == pytest.approx(0.0, abs=1e-6)
    assert [row["high"] for row in mixed["table"]] == [pytest.approx(8 / 15), 1.0]
    # gaps of 1/3 over 3 images and 1/2 over 1: weighted by count, 0.375 (unweighted 0.42)
    uneven = metrics.calibration(torch.tensor([1.0, 1.0, 1.0, 0.5]), torch.tensor([1, 1, 0, 1]))
    assert uneven["ece"] == pytest.approx(3 / 4 * (1 - 2 / 3) + 1 / 4 * (1 - 0.5))
    with pytest.raises(ValueError, match="equal in shape"):
        metrics.calibration(torch.ones(3), torch.ones(2))
