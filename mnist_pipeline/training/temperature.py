"""Temperature scaling (Guo et al., 2017): one scalar T > 0, fitted on the validation split,
divides the logits so that softmax confidences say how often the model is right.

Pure torch, no I/O. Dividing logits by T never changes their argmax, so accuracy is unchanged;
folded into the network's last linear layer (weight / T, bias / T) it adds no operator to the
exported graph, so ONNX parity holds as before.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from mnist_pipeline.evaluation import metrics
from mnist_pipeline.model.network import logits_layer, predict_logits

# Search range of T: far wider than any sensible model needs (MNIST nets land near 1).
T_MIN, T_MAX = 0.05, 20.0


def nll(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> float:
    """Mean negative log-likelihood of `labels` under softmax(logits / temperature)."""
    scaled = logits.double() / temperature
    return float(torch.nn.functional.cross_entropy(scaled, labels))


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, iterations: int = 80) -> float:
    """The T in [T_MIN, T_MAX] minimising the validation NLL of softmax(logits / T).

    The NLL is convex in 1/T, so a golden-section search over 1/T finds the minimum to ~1e-12
    relative precision in 80 steps, deterministically (no optimizer state, no randomness).
    """
    if len(labels) == 0:
        raise ValueError("fit_temperature needs at least one labelled example")
    low, high = 1 / T_MAX, 1 / T_MIN  # over beta = 1/T
    ratio = (math.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = nll(logits, labels, 1 / a), nll(logits, labels, 1 / b)
    for _ in range(iterations):
        if fa < fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = nll(logits, labels, 1 / a)
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = nll(logits, labels, 1 / b)
    return 1 / ((low + high) / 2)


def ece(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> float:
    """Expected calibration error (metrics.calibration's bins) of softmax(logits / T)."""
    confidence, predicted = torch.softmax(logits.double() / temperature, dim=1).max(dim=1)
    return metrics.calibration(confidence, predicted == labels)["ece"]


@torch.no_grad()
def fold_temperature(model: nn.Module, temperature: float) -> None:
    """Divide the logits `model` computes by `temperature`, in place (its last linear layer)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    layer = logits_layer(model)
    layer.weight.div_(temperature)
    if layer.bias is not None:
        layer.bias.div_(temperature)


def at_search_bound(temperature: float) -> bool:
    """Whether a fitted T sits on the edge of the search range: the NLL still falls there, as it
    does towards T = 0 on a validation split the model gets (almost) all right."""
    return temperature <= T_MIN * 1.001 or temperature >= T_MAX * 0.999


def calibrate(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int
) -> dict[str, Any]:
    """Fit T on (images, labels), the validation split, and fold it into `model`.

    A T on the edge of the search range is not folded (`folded` False, `temperature` 1): there
    is no minimum to trust, and a T of 0.05 would multiply the logits by 20. Returns the applied
    and fitted temperatures and the validation NLL and ECE before and after, for the record.
    """
    logits = predict_logits(model, images, batch_size).float()
    fitted = fit_temperature(logits, labels)
    folded = not at_search_bound(fitted)
    applied = fitted if folded else 1.0
    if folded:
        fold_temperature(model, applied)
    return {
        "temperature": applied,
        "fitted": fitted,
        "folded": folded,
        "val_images": len(labels),
        "val_nll_before": nll(logits, labels, 1.0),
        "val_nll_after": nll(logits, labels, applied),
        "val_ece_before": ece(logits, labels),
        "val_ece_after": ece(logits, labels, applied),
    }


def summary(report: dict[str, Any]) -> str:
    """One log line on what `calibrate` did."""
    if not report["folded"] and report["fitted"] >= T_MAX * 0.999:
        return (
            f"temperature scaling skipped: the validation NLL keeps falling to the largest "
            f"temperature searched (T = {report['fitted']:.3g}): the model's confident answers are "
            f"mostly wrong on the {report['val_images']} validation images (did training diverge? "
            "see its loss); model.pt is left unscaled"
        )
    if not report["folded"]:
        return (
            f"temperature scaling skipped: the validation NLL keeps falling to the edge of the "
            f"search range (T = {report['fitted']:.3g}), as it does when the model gets (almost) "
            f"all of the {report['val_images']} validation images right; model.pt is left unscaled "
            f"(a larger train.val_size, with some mistakes in it, gives a temperature to fit)"
        )
    return (
        f"temperature scaling: T = {report['temperature']:.4f} fitted on "
        f"{report['val_images']} validation images, ECE {report['val_ece_before']:.4f} -> "
        f"{report['val_ece_after']:.4f}, NLL {report['val_nll_before']:.4f} -> "
        f"{report['val_nll_after']:.4f}"
    )
