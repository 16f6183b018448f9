"""Evaluation plots as PNG files (matplotlib's object API: headless, no pyplot global state)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, FuncFormatter, MaxNLocator

from mnist_pipeline.core.atomic import write_with
from mnist_pipeline.core.errors import DataError

GRID_LIMIT = 36  # images per grid (6 x 6)
DPI = 100
CELL = (43, 39)  # a grid cell in image pixels (rows, columns): 1.6 x 1.45 inches
CAPTION, MARGIN = 14, 5  # pixel rows above each 28 x 28 image (its caption), columns beside it


def _margins(fig: Figure, left: float, right: float, bottom: float, top: float, **space) -> None:
    """Fixed margins in inches (cheaper than tight_layout, which draws the figure to measure)."""
    width, height = fig.get_size_inches()
    fig.subplots_adjust(
        left=left / width, right=1 - right / width, bottom=bottom / height, top=1 - top / height,
        **space,
    )  # fmt: skip


def _save(fig: Figure, path: Path) -> None:
    write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))


def image_grid(images: torch.Tensor, titles: list[str], title: str, path: Path) -> None:
    """uint8 [N, 28, 28] images with one caption each, in a near-square grid (one image of all
    the tiles in one axes: cheaper to draw than an axes per image)."""
    n = len(images)
    cols = max(1, min(6, math.ceil(math.sqrt(n))))
    rows = max(1, math.ceil(n / cols))
    fig = Figure(figsize=(1.45 * cols, 1.6 * rows + 0.6))
    fig.suptitle(title, fontsize=11)
    ax = fig.add_axes((0, 0, 1, 1.6 * rows / (1.6 * rows + 0.6)))
    ax.set_axis_off()
    tiles = np.ma.masked_all((rows * CELL[0], cols * CELL[1]), dtype=np.uint8)  # masked: paper
    for i in range(n):
        top, left = (i // cols) * CELL[0] + CAPTION, (i % cols) * CELL[1] + MARGIN
        tiles[top : top + 28, left : left + 28] = images[i].numpy()
        ax.text(left + 14, top - CAPTION / 2, titles[i], ha="center", va="center", fontsize=8,
                linespacing=1.1)  # fmt: skip
    # White on black, as the model sees digits (the ONNX contract, the web preview).
    ax.imshow(tiles, cmap="gray", vmin=0, vmax=255, interpolation="nearest", aspect="auto")
    ax.set_xlim(-0.5, cols * CELL[1] - 0.5)
    ax.set_ylim(rows * CELL[0] - 0.5, -0.5)
    if n == 0:
        ax.text(CELL[1] / 2, CELL[0] / 2, "none", ha="center", va="center", fontsize=12)
    _save(fig, path)


def mistakes_by_confidence(
    actual: torch.Tensor, predicted: torch.Tensor, confidence: torch.Tensor
) -> torch.Tensor:
    """Indices of the misclassified images, most confident first (ties in index order)."""
    wrong = torch.nonzero(actual != predicted).flatten()
    return wrong[torch.argsort(confidence[wrong], descending=True, stable=True)]


def plot_misclassified(
    images: torch.Tensor,
    actual: torch.Tensor,
    predicted: torch.Tensor,
    confidence: torch.Tensor,
    path: Path,
    limit: int = GRID_LIMIT,
    what: str = "test images",
) -> int:
    """The most confident mistakes first; returns how many mistakes there were in all."""
    wrong = mistakes_by_confidence(actual, predicted, confidence)
    order = wrong[:limit]
    titles = [
        f"#{i}: true {actual[i]}\npred {predicted[i]} ({confidence[i]:.1%})" for i in order.tolist()
    ]
    shown = f"{len(order)} most confident" if len(wrong) > len(order) else "all"
    image_grid(images[order], titles, f"Misclassified {what}: {shown} of {len(wrong)}", path)
    return len(wrong)


def correct_by_doubt(
    actual: torch.Tensor, predicted: torch.Tensor, confidence: torch.Tensor
) -> torch.Tensor:
    """Indices of the correctly classified images, least confident first (ties in index order):
    the right answers the model nearly got wrong."""
    right = torch.nonzero(actual == predicted).flatten()
    return right[torch.argsort(confidence[right], stable=True)]


def plot_correct(
    images: torch.Tensor,
    actual: torch.Tensor,
    predicted: torch.Tensor,
    confidence: torch.Tensor,
    path: Path,
    limit: int = GRID_LIMIT,
) -> None:
    """The least confident correct predictions first."""
    right = correct_by_doubt(actual, predicted, confidence)
    order = right[:limit]
    titles = [f"#{i}: {predicted[i]} ({confidence[i]:.1%})" for i in order.tolist()]
    shown = f"{len(order)} least confident" if len(right) > len(order) else "all"
    image_grid(images[order], titles, f"Correct test images: {shown} of {len(right)}", path)


def plot_confusion(matrix: torch.Tensor, path: Path) -> None:
    """Counts per (true, predicted) pair; colour on a log scale so off-diagonal cells show."""
    counts = matrix.numpy()
    k = counts.shape[0]
    fig = Figure(figsize=(7.5, 6.5))
    ax = fig.subplots()
    image = ax.imshow(np.log1p(counts), cmap="Blues")
    fig.colorbar(image, ax=ax, label="log(1 + count)")
    threshold = np.log1p(counts).max() * 0.6
    for i in range(k):
        for j in range(k):
            if counts[i, j]:
                colour = "white" if np.log1p(counts[i, j]) > threshold else "black"
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=8, color=colour)
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    ax.set_title(f"Confusion matrix ({int(counts.trace())}/{int(counts.sum())} correct)")
    _margins(fig, 0.75, 0.1, 0.6, 0.45)
    _save(fig, path)


def read_history(path: Path) -> dict[str, list[float]]:
    """The history CSV as columns of floats (empty cells become NaN); DataError naming the file
    when it is not one train writes."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        columns = rows[0].keys() if rows else []
        return {c: [float(r[c]) if r[c] else math.nan for r in rows] for c in columns}
    except (UnicodeDecodeError, ValueError, TypeError, csv.Error) as exc:
        raise DataError(
            f"{path} is not a training history ({type(exc).__name__}): run `mnist-pipeline train`"
        ) from None


def _two_three_five(value: float, _position: int) -> str:
    """A minor log-axis label for 2, 3 and 5 times a power of ten; no label for the others."""
    if value <= 0:
        return ""
    leading = round(value / 10 ** math.floor(math.log10(value)))
    return f"{value:g}" if leading in (2, 3, 5) else ""


def plot_training_curves(history_path: Path, path: Path) -> bool:
    """Loss, accuracy and learning rate per epoch; False (nothing written) without a history."""
    if not history_path.is_file():
        return False
    history = read_history(history_path)
    if not history.get("epoch"):
        return False
    drawn = ("train_loss", "val_loss", "train_accuracy", "val_accuracy", "lr")
    if missing := [column for column in drawn if column not in history]:
        raise DataError(
            f"{history_path} has no {', '.join(missing)} column: run `mnist-pipeline train`"
        )
    epochs = history["epoch"]
    fig = Figure(figsize=(13, 4))
    loss_ax, acc_ax, lr_ax = fig.subplots(1, 3)
    for split, style in (("train", "-o"), ("val", "-s")):
        loss_ax.plot(epochs, history[f"{split}_loss"], style, markersize=3, label=split)
        acc_ax.plot(epochs, history[f"{split}_accuracy"], style, markersize=3, label=split)
    lr_ax.plot(epochs, history["lr"], "-o", markersize=3, color="tab:green")
    for ax, title in ((loss_ax, "loss"), (acc_ax, "accuracy"), (lr_ax, "learning rate")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    loss_ax.set_yscale("log")
    # 0.1, 0.2, 0.05 rather than 10^-1 and 2x10^-1 on the log axis (minor ticks 2, 3, 5 only)
    loss_ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    loss_ax.yaxis.set_minor_formatter(FuncFormatter(_two_three_five))
    if len(epochs) == 1:  # one epoch: one tick, not 0.95 ... 1.05
        for ax in (loss_ax, acc_ax, lr_ax):
            ax.set_xticks(epochs)
    loss_ax.legend()
    acc_ax.legend()
    lr_ax.set_title("learning rate (at epoch start)")
    _margins(fig, 0.65, 0.2, 0.55, 0.4, wspace=0.22)
    _save(fig, path)
    return True


def plot_reliability(calibration: dict, path: Path) -> None:
    """Reliability diagram: accuracy per confidence bin against the diagonal (each bin's image
    count is in the calibration table of metrics.json, not drawn)."""
    fig = Figure(figsize=(5.2, 4.6))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="calibrated")
    for row in calibration["table"]:
        width = row["high"] - row["low"]
        ax.bar(
            row["low"],
            row["accuracy"],
            width=width,
            align="edge",
            color="#4c72b0",
            edgecolor="white",
            alpha=0.85,
        )
        ax.plot(row["confidence"], row["accuracy"], "o", color="#dd8452", markersize=3)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("confidence (top probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability on the test set: ECE {calibration['ece']:.4f}", fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    _margins(fig, 0.65, 0.15, 0.55, 0.35)
    _save(fig, path)


def plot_robustness(scores: dict[str, float], path: Path) -> None:
    """Accuracy per transformation of the robustness set, as horizontal bars."""
    names = list(scores)
    fig = Figure(figsize=(5.6, 0.45 * len(names) + 1.2))
    ax = fig.subplots()
    bars = ax.barh(names[::-1], [scores[n] for n in names[::-1]], color="#4c72b0")
    ax.bar_label(bars, labels=[f"{scores[n]:.1%}" for n in names[::-1]], padding=3, fontsize=8)
    ax.set_xlim(0, 1.12)
    ax.set_xlabel("accuracy")
    ax.set_title("Robustness: test digits drawn like real photos and scans", fontsize=10)
    _margins(fig, 1.05, 0.15, 0.5, 0.35)
    _save(fig, path)
