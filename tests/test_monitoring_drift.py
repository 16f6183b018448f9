"""Drift features, references and PSI (monitoring/drift.py) on tiny hand-made data."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.monitoring import drift


def bar(vertical: bool, at: int = 14) -> np.ndarray:
    """A 28x28 image with one full-length bar of ink, a column (vertical) or a row."""
    image = np.zeros((28, 28), np.float32)
    if vertical:
        image[4:24, at] = 1.0
    else:
        image[at, 4:24] = 1.0
    return image


def digits(n: int, seed: int = 0) -> np.ndarray:
    """n tall strokes of random length and thickness near the centre, in [0, 1]."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 28, 28), np.float32)
    for image in images:
        top, height = rng.integers(3, 8), rng.integers(12, 20)
        left, width = rng.integers(11, 14), rng.integers(2, 5)
        image[top : top + height, left : left + width] = rng.uniform(0.6, 1.0)
    return images


def answers(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 10, n), rng.uniform(0.5, 1.0, n)


def test_image_features_measure_ink_brightness_offset_and_orientation() -> None:
    blank, column, row = np.zeros((28, 28), np.float32), bar(True), bar(False)
    corner = np.zeros((28, 28), np.float32)
    corner[0, 0] = 0.4
    found = drift.image_features(np.stack([blank, column, row, corner]))
    assert found["ink"].tolist() == pytest.approx([0.0, 20 / 784, 20 / 784, 0.4 / 784])
    assert found["bright"].tolist() == pytest.approx([0.0, 20 / 784, 20 / 784, 0.0])
    assert found["vertical"].tolist() == pytest.approx([0.5, 1.0, 0.0, 0.5])
    assert found["offset"][:3].tolist() == pytest.approx([0.0, 0.5, 0.5])
    assert found["offset"][3] == pytest.approx(math.hypot(13.5, 13.5))


def test_psi_is_zero_for_equal_shares_and_finite_for_an_empty_bin() -> None:
    assert drift.psi(np.array([0.5, 0.5]), np.array([0.5, 0.5])) == 0.0
    expected = -0.25 * math.log(0.5) + 0.25 * math.log(1.5)
    assert drift.psi(np.array([0.5, 0.5]), np.array([0.25, 0.75])) == pytest.approx(expected)
    empty = drift.psi(np.array([0.5, 0.5]), np.array([0.0, 1.0]))
    floor = drift.EPSILON  # an empty bin counts as this share: rare, not infinite
    assert empty == pytest.approx((floor - 0.5) * math.log(floor / 0.5) + 0.5 * math.log(2))


def test_the_same_images_do_not_drift_and_inverted_ones_do() -> None:
    images, (predicted, confidence) = digits(300), answers(300)
    ref = drift.reference(images, predicted, confidence)
    assert ref.images == 300 and set(ref.features) == set(drift.FEATURES)
    assert len(ref.features["digit"].shares) == 10 and ref.features["digit"].edges is None
    assert sum(ref.features["ink"].shares) == pytest.approx(1.0)
    for name in drift.CONTINUOUS:  # deciles of spread-out values: ten bins of about 30 images
        assert len(ref.features[name].edges) == 9, name
    assert ref.features["confidence"].shares == pytest.approx([0.1] * 10)
    same = drift.compare(ref, drift.features(images, predicted, confidence))
    assert max(same.values()) < 1e-9
    fresh = drift.features(digits(300, seed=1), *answers(300, seed=1))  # a new sample: close
    assert max(drift.compare(ref, fresh).values()) < 0.25
    inverted = drift.compare(ref, drift.features(1.0 - images, predicted, confidence))
    assert inverted["ink"] > 5 and inverted["bright"] > 5
    assert inverted["digit"] < 1e-9  # the same answers: only the image statistics moved
    turned = drift.compare(ref, drift.features(images.transpose(0, 2, 1), predicted, confidence))
    assert turned["vertical"] > 5 and turned["ink"] < 1e-9


def test_confidences_count_to_the_predictions_files_precision() -> None:
    """A live 0.9999997 falls in the bin of a recorded 1.000000 (evaluate writes six decimals),
    so a model that is sure of itself does not drift against its own reference."""
    images, (predicted, _) = digits(100), answers(100)
    ref = drift.reference(images, predicted, np.linspace(0.5, 1.0, 100))
    live = drift.features(images[:1], predicted[:1], np.array([0.9999997]))
    assert live["confidence"].tolist() == [1.0]
    assert drift.bin_index(live["confidence"], ref.features["confidence"].edges).tolist() == [9]


def test_a_stored_reference_reads_back_and_a_broken_one_names_the_problem() -> None:
    ref = drift.reference(digits(50), *answers(50))
    assert drift.parse_reference(ref.to_bytes(), "v1") == ref
    data = ref.to_dict()
    del data["features"]["ink"]
    with pytest.raises(PipelineError, match="v1: no reference for ink"):
        drift.parse_reference(drift.DriftReference.model_validate(data).to_bytes(), "v1")
    data = ref.to_dict()
    data["features"]["digit"]["shares"] = [1.0]
    with pytest.raises(PipelineError, match="v1: digit has 1 shares for 10 bins"):
        drift.parse_reference(drift.DriftReference.model_validate(data).to_bytes(), "v1")
    with pytest.raises(PipelineError, match="v2 is not readable JSON"):
        drift.parse_reference(b"{", "v2")


def test_bad_inputs_are_refused_with_the_problem() -> None:
    with pytest.raises(PipelineError, match=r"images must be \[N, 28, 28\], got \[2, 27, 28\]"):
        drift.image_features(np.zeros((2, 27, 28)))
    with pytest.raises(PipelineError, match="2 images but 1 digits and 2 confidences"):
        drift.features(np.zeros((2, 28, 28)), np.array([1]), np.array([0.5, 0.5]))
    for digit in (10, -1):
        with pytest.raises(PipelineError, match="outside 0-9"):
            drift.features(np.zeros((1, 28, 28)), np.array([digit]), np.array([0.5]))
    with pytest.raises(PipelineError, match="at least one image"):
        drift.reference(np.zeros((0, 28, 28)), np.array([]), np.array([]))
