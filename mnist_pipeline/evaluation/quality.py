"""Evaluation beyond test accuracy: calibration and robustness to real-looking inputs.

Both are part of the evaluate stage's report (metrics.json) and plots: the expected calibration
error with a reliability diagram (users threshold on `probabilities`: does 0.9 mean 90%?), and
the accuracy per transformation of the robustness set (robustness.py), test digits drawn the way
photos and scans differ from MNIST, through the preprocessing `predict` uses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mnist_pipeline.core.contract import MNIST_MEAN, MNIST_STD
from mnist_pipeline.evaluation import plots
from mnist_pipeline.evaluation.robustness_cache import cached_robustness_set
from mnist_pipeline.model.network import predict_logits

RELIABILITY_PLOT = "reliability.png"
ROBUSTNESS_PLOT = "robustness.png"


def robustness_report(
    net: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    per_transform: int,
    batch_size: int,
    cache: Path | None = None,
) -> dict[str, Any] | None:
    """Accuracy per transformation (and their mean, `overall`) on `per_transform` test digits
    each; None when per_transform is 0. The rendered set is cached in `cache` (when given)."""
    if per_transform == 0 or len(labels) == 0:
        return None
    sets = cached_robustness_set(images.numpy(), labels.numpy(), per_transform, cache)
    return robustness_scores(net, sets, batch_size)


def robustness_scores(
    net: nn.Module, sets: dict[str, tuple[np.ndarray, np.ndarray]], batch_size: int
) -> dict[str, Any]:
    """`net`'s accuracy on each transformation of a rendered robustness set
    (`robustness.robustness_set`), their mean (`overall`) and the digits per transformation."""
    accuracy = {}
    for name, (digits, wanted) in sets.items():
        inputs = (torch.from_numpy(digits).unsqueeze(1) - MNIST_MEAN) / MNIST_STD
        predicted = predict_logits(net, inputs, batch_size).argmax(dim=1).numpy()
        accuracy[name] = float(np.mean(predicted == wanted))
    per = len(next(iter(sets.values()))[1])
    return {
        "overall": float(np.mean(list(accuracy.values()))),
        "accuracy": accuracy,
        "per_transform": per,
    }


def write_plots(calibration: dict, robustness: dict[str, Any] | None, plots_dir: Path) -> None:
    """The reliability diagram, and the robustness chart when there is a report."""
    plots.plot_reliability(calibration, plots_dir / RELIABILITY_PLOT)
    if robustness is not None:
        plots.plot_robustness(robustness["accuracy"], plots_dir / ROBUSTNESS_PLOT)
