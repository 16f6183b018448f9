"""Drift of live traffic from MNIST test: per-image features, binned references, PSI (numpy only).

A reference is measured once, when a version is registered, on MNIST test: per feature the share
of images in each bin. Live images get the same features and bins, and the population stability
index (PSI) per feature says how far their distribution moved:

    PSI = sum over bins of (live - ref) * ln(live / ref)

with shares below EPSILON raised to it, so an empty bin counts as rare, not as infinite. The
features are the predicted digit (ten categories), the confidence (the top probability, to six
decimals), and statistics of the preprocessed 28x28 image: `ink` (mean pixel value), `bright`
(the share of pixels over 0.5), `offset` (the ink's centre of mass from the image centre, in
pixels) and `vertical` (the vertical share of the ink's spread: tall digits near 1, digits
turned on their side near 0). The continuous features are cut at the reference's deciles.
"""

from __future__ import annotations

import json

import numpy as np
from pydantic import Field

from mnist_pipeline.core.contract import IMAGE_SIZE, NUM_CLASSES
from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.core.reports import Report, parse_json_report

REFERENCE_FILE = "drift_reference.json"
DIGIT = "digit"
CONTINUOUS = ("confidence", "ink", "bright", "offset", "vertical")
FEATURES = (DIGIT, *CONTINUOUS)
EPSILON = 1e-4  # the smallest share a bin counts with
QUANTILES = np.linspace(0.0, 1.0, 11)[1:-1]  # deciles: ten bins of the reference's images
CENTRE = (IMAGE_SIZE - 1) / 2
# Confidences count to evaluate's precision (its predictions CSV): a live 0.9999997 and a
# recorded 1.000000 fall in the same bin.
CONFIDENCE_DECIMALS = 6


class FeatureReference(Report):
    """One feature's bins: inner `edges` (none: the ten digits) and the reference's shares."""

    edges: list[float] | None
    shares: list[float]


class DriftReference(Report):
    """What MNIST test looks like to one version: the features' shares per bin."""

    images: int = Field(ge=1)
    features: dict[str, FeatureReference]

    def to_bytes(self) -> bytes:
        return (json.dumps(self.to_dict(), indent=2) + "\n").encode()


def image_features(digits: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image statistics of float [N, 28, 28] images in [0, 1]: ink, bright, offset,
    vertical (an image without ink: offset 0, vertical 0.5)."""
    digits = np.asarray(digits, dtype=np.float64)
    if digits.ndim != 3 or digits.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise PipelineError(f"drift: images must be [N, 28, 28], got {list(digits.shape)}")
    grid = np.arange(IMAGE_SIZE, dtype=np.float64)
    total = digits.sum(axis=(1, 2))
    inked = total > 0
    weight = np.where(inked, total, 1.0)
    rows, cols = digits.sum(axis=2), digits.sum(axis=1)  # ink per row, per column
    cy, cx = rows @ grid / weight, cols @ grid / weight
    vy = (rows * (grid[None, :] - cy[:, None]) ** 2).sum(axis=1) / weight
    vx = (cols * (grid[None, :] - cx[:, None]) ** 2).sum(axis=1) / weight
    spread = vy + vx
    return {
        "ink": digits.mean(axis=(1, 2)),
        "bright": (digits > 0.5).mean(axis=(1, 2)),
        "offset": np.where(inked, np.hypot(cy - CENTRE, cx - CENTRE), 0.0),
        "vertical": np.where(spread > 0, vy / np.where(spread > 0, spread, 1.0), 0.5),
    }


def features(
    digits: np.ndarray, predicted: np.ndarray, confidence: np.ndarray
) -> dict[str, np.ndarray]:
    """Every feature of each image, from the images, the predicted digits and their
    probabilities (the confidence)."""
    predicted, confidence = np.asarray(predicted), np.asarray(confidence)
    if not len(digits) == len(predicted) == len(confidence):
        raise PipelineError(
            f"drift: {len(digits)} images but {len(predicted)} digits and "
            f"{len(confidence)} confidences"
        )
    if predicted.size and (predicted.min() < 0 or predicted.max() >= NUM_CLASSES):
        raise PipelineError("drift: a predicted digit is outside 0-9")
    return {
        DIGIT: predicted.astype(np.float64),
        "confidence": np.round(confidence.astype(np.float64), CONFIDENCE_DECIMALS),
        **image_features(digits),
    }


def bin_index(values: np.ndarray, edges: list[float] | None) -> np.ndarray:
    """Each value's bin: the digit itself, or its place among the inner edges."""
    if edges is None:
        return np.asarray(values).astype(np.int64)
    return np.searchsorted(np.asarray(edges), values, side="right")


def shares(values: np.ndarray, edges: list[float] | None) -> np.ndarray:
    """The share of `values` in each bin (len(edges) + 1 bins, or ten digits)."""
    bins = NUM_CLASSES if edges is None else len(edges) + 1
    counts = np.bincount(bin_index(values, edges), minlength=bins)[:bins]
    return counts / max(len(values), 1)


def reference(digits: np.ndarray, predicted: np.ndarray, confidence: np.ndarray) -> DriftReference:
    """The reference of a model's answers (digit, confidence) on images [N, 28, 28]."""
    if len(digits) == 0:
        raise PipelineError("drift: a reference needs at least one image")
    found = features(digits, predicted, confidence)
    refs = {}
    for name, values in found.items():
        edges = None if name == DIGIT else np.unique(np.quantile(values, QUANTILES)).tolist()
        refs[name] = FeatureReference(edges=edges, shares=shares(values, edges).tolist())
    return DriftReference(images=len(digits), features=refs)


def parse_reference(data: bytes, where: str) -> DriftReference:
    """A stored reference (PipelineError naming `where` and the field)."""
    found = parse_json_report(DriftReference, data, where)
    missing = [name for name in FEATURES if name not in found.features]
    if missing:
        raise PipelineError(f"{where}: no reference for {', '.join(missing)}")
    for name, ref in found.features.items():
        bins = NUM_CLASSES if ref.edges is None else len(ref.edges) + 1
        if len(ref.shares) != bins:
            raise PipelineError(f"{where}: {name} has {len(ref.shares)} shares for {bins} bins")
    return found


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index of `actual` shares against `expected` (same bins)."""
    e = np.maximum(np.asarray(expected, dtype=np.float64), EPSILON)
    a = np.maximum(np.asarray(actual, dtype=np.float64), EPSILON)
    return float(((a - e) * np.log(a / e)).sum())


def compare(ref: DriftReference, window: dict[str, np.ndarray]) -> dict[str, float]:
    """PSI of each feature of the live `window` (features(), concatenated) against `ref`."""
    return {
        name: psi(np.asarray(ref.features[name].shares), shares(window[name], edges))
        for name in FEATURES
        for edges in (ref.features[name].edges,)
    }
