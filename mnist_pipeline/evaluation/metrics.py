"""Classification metrics from label tensors (pure functions, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mnist_pipeline.core.contract import NUM_CLASSES


@dataclass(frozen=True)
class EpochStats:
    """Mean loss and accuracy over the images seen in one pass."""

    loss: float
    accuracy: float
    images: int


def score(logits: torch.Tensor, labels: torch.Tensor) -> EpochStats:
    """Mean cross-entropy and accuracy of `logits` against `labels`."""
    if len(labels) == 0:
        return EpochStats(float("nan"), float("nan"), 0)
    loss = F.cross_entropy(logits.double(), labels, reduction="sum").item() / len(labels)
    accuracy = (logits.argmax(1) == labels).sum().item() / len(labels)
    return EpochStats(loss, accuracy, len(labels))


def confusion_matrix(
    actual: torch.Tensor, predicted: torch.Tensor, num_classes: int = NUM_CLASSES
) -> torch.Tensor:
    """int64 [num_classes, num_classes]; rows are true labels, columns predictions."""
    if actual.shape != predicted.shape or actual.dim() != 1:
        raise ValueError(
            f"actual and predicted must be 1-D and equal in shape, "
            f"got {tuple(actual.shape)} and {tuple(predicted.shape)}"
        )
    for name, values in (("actual", actual), ("predicted", predicted)):
        if values.numel() and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"{name} labels must lie in 0..{num_classes - 1}")
    flat = actual.long() * num_classes + predicted.long()
    return torch.bincount(flat, minlength=num_classes**2).reshape(num_classes, num_classes)


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


def per_class(matrix: torch.Tensor) -> dict[str, dict[str, float | int]]:
    """Precision, recall, F1 and support per class ("0".."9"); 0.0 where undefined."""
    stats: dict[str, dict[str, float | int]] = {}
    for k in range(matrix.shape[0]):
        hits = int(matrix[k, k])
        precision = _ratio(hits, int(matrix[:, k].sum()))
        recall = _ratio(hits, int(matrix[k, :].sum()))
        f1 = _ratio(2 * precision * recall, precision + recall) if precision + recall else 0.0
        stats[str(k)] = {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": int(matrix[k, :].sum()),
        }
    return stats


def accuracy(matrix: torch.Tensor) -> float:
    """Fraction on the diagonal (0.0 for an empty matrix)."""
    return _ratio(int(matrix.diagonal().sum()), int(matrix.sum()))


def calibration(confidence: torch.Tensor, correct: torch.Tensor, bins: int = 15) -> dict:
    """Expected calibration error over `bins` equal-width confidence bins, and the bins.

    A prediction with confidence c falls in bin ceil(c * bins) - 1 (with 15 bins, (0.8667,
    0.9333] is one); ECE = sum over bins of (count / N) * |accuracy - mean confidence|: 0 when
    a stated confidence of 0.9 is right 90% of the time.
    """
    if confidence.shape != correct.shape or confidence.dim() != 1:
        raise ValueError("confidence and correct must be 1-D and equal in shape")
    index = (torch.ceil(confidence.double() * bins).long() - 1).clamp(0, bins - 1)
    table, ece, n = [], 0.0, len(confidence)
    for b in range(bins):
        chosen = index == b
        count = int(chosen.sum())
        if count:
            mean_conf = float(confidence[chosen].double().mean())
            acc = float(correct[chosen].double().mean())
            ece += count / n * abs(acc - mean_conf)
            table.append(
                {
                    "low": b / bins,
                    "high": (b + 1) / bins,
                    "count": count,
                    "confidence": mean_conf,
                    "accuracy": acc,
                }
            )
    return {"ece": ece, "bins": bins, "table": table}
