"""evaluation.quality.robustness_scores against stand-in networks whose answers are known: each
transformation's accuracy is the share of its wanted digits the network gives, on inputs
normalised as in training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mnist_pipeline.core.contract import MNIST_MEAN, MNIST_STD, NUM_CLASSES
from mnist_pipeline.evaluation.quality import robustness_scores


class Always(nn.Module):
    """Gives `digit` for every image."""

    def __init__(self, digit: int) -> None:
        super().__init__()
        self.digit = digit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(len(x), NUM_CLASSES)
        logits[:, self.digit] = 1.0
        return logits


class ByMeanInk(nn.Module):
    """Gives 1 for an image whose normalised mean is above -0.2, else 0: a blank image is 0
    once normalised (mean -MNIST_MEAN/MNIST_STD = -0.42) and 1 if it were not (mean 0)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1:] == (1, 28, 28)
        inked = (x.mean(dim=(1, 2, 3)) > -0.2).long()
        return nn.functional.one_hot(inked, NUM_CLASSES).float()


def sets() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    blank = np.zeros((4, 28, 28), np.float32)
    return {  # 4 digits per transformation, as the robustness set renders them (float32 in [0, 1])
        "rotate": (blank, np.array([3, 3, 3, 1])),
        "thick": (blank, np.array([3, 0, 0, 0])),
        "shift": (blank, np.array([0, 0, 0, 0])),
    }


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_each_transformation_scores_the_share_of_its_wanted_digits(batch_size: int) -> None:
    scores = robustness_scores(Always(3), sets(), batch_size)
    assert scores["accuracy"] == {"rotate": 0.75, "thick": 0.25, "shift": 0.0}
    assert scores["overall"] == pytest.approx((0.75 + 0.25 + 0.0) / 3)
    assert scores["per_transform"] == 4


def test_inputs_are_normalised_as_in_training() -> None:
    assert -MNIST_MEAN / MNIST_STD < -0.2  # what ByMeanInk tells apart
    scores = robustness_scores(ByMeanInk(), sets(), 8)
    assert scores["accuracy"] == {"rotate": 0.0, "thick": 0.75, "shift": 1.0}
