"""Scoring a network on labelled digits: predictions, confusion matrix, accuracy, loss (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mnist_pipeline.data.dataset import normalise
from mnist_pipeline.evaluation import metrics
from mnist_pipeline.model.network import predict_logits


@dataclass(frozen=True)
class Scores:
    """What a network answered on a set of digits, and how well."""

    logits: torch.Tensor
    actual: torch.Tensor
    predicted: torch.Tensor
    confidence: torch.Tensor  # the top softmax probability per image
    matrix: torch.Tensor  # confusion matrix, rows = true digit

    @property
    def accuracy(self) -> float:
        return metrics.accuracy(self.matrix)

    @property
    def correct(self) -> int:
        return int(self.matrix.trace())

    @property
    def loss(self) -> float:
        """Mean cross-entropy (0.0 for no images)."""
        return metrics.score(self.logits, self.actual).loss if len(self.actual) else 0.0


def score(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> Scores:
    """Run `net` on uint8 [N, 28, 28] `images` and score it against `labels`."""
    logits = predict_logits(net, normalise(images), batch_size)
    confidence, predicted = torch.softmax(logits, dim=1).max(dim=1)
    actual = labels.long()
    return Scores(
        logits, actual, predicted, confidence, metrics.confusion_matrix(actual, predicted)
    )
