"""The robustness set's building blocks do what they model (tiny synthetic canvases)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from mnist_pipeline.evaluation import distortions


def test_max_filter_is_pillows_max_filter() -> None:
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (23, 31), dtype=np.uint8))
    for size in (3, 7, 13):
        ours = np.asarray(distortions.max_filter(image, size))
        assert np.array_equal(ours, np.asarray(image.filter(ImageFilter.MaxFilter(size))))


def test_perspective_keystones_a_rectangle() -> None:
    alpha = np.zeros((100, 120), np.float32)
    alpha[10:90, 20:100] = 1  # an 80 x 80 square
    for seed in range(6):
        warped = distortions.perspective(alpha, np.random.default_rng(seed)) > 0.5
        rows, cols = np.nonzero(warped)
        # Opposite edges of the square are no longer the same length (one is further away).
        top, bottom = warped[rows.min() + 2].sum(), warped[rows.max() - 2].sum()
        left, right = warped[:, cols.min() + 2].sum(), warped[:, cols.max() - 2].sum()
        assert max(abs(top - bottom), abs(left - right)) >= 8, seed
        assert 0.5 * alpha.sum() < warped.sum() < 0.9 * alpha.sum()  # squeezed, not lost
        # the far edge narrowed by 25-45% (and jittered): not the near one widened
        assert min(top / bottom, bottom / top, left / right, right / left) < 0.82, seed
        assert not (warped[0].any() or warped[-1].any() or warped[:, 0].any()), seed
        assert not warped[:, -1].any(), seed  # nothing pushed off the canvas


def test_perspective_coefficients_map_corners_back() -> None:
    source = [(0.0, 0.0), (10.0, 0.0), (10.0, 10.0), (0.0, 10.0)]
    target = [(2.0, 1.0), (8.0, 0.0), (10.0, 10.0), (0.0, 9.0)]
    a, b, c, d, e, f, g, h = distortions.perspective_coefficients(source, target)
    for (x, y), (u, v) in zip(target, source, strict=True):
        w = g * x + h * y + 1
        assert (a * x + b * y + c) / w == pytest.approx(u)
        assert (d * x + e * y + f) / w == pytest.approx(v)


def test_light_field_has_a_gradient_and_darkens_by_tens_of_percent() -> None:
    for seed in range(6):
        field = distortions.light_field((80, 120), np.random.default_rng(seed))
        assert field.max() <= 1 and 0.15 < np.ptp(field) < 0.65, seed
        # a gradient: the best-fitting plane drops by over 10% across the canvas
        rows, cols = np.indices(field.shape)
        design = np.stack([np.ones(field.size), rows.ravel() / 80, cols.ravel() / 120], axis=1)
        _, down, across = np.linalg.lstsq(design, field.ravel(), rcond=None)[0]
        assert abs(down) + abs(across) > 0.1, seed
        # a vignette (darker corners: a radial term) and a shadow's edge (what a plane and the
        # radial term leave: a step of 12-25%; under 0.01 without the shadow)
        y, x = (rows + 0.5) / 80 - 0.5, (cols + 0.5) / 120 - 0.5
        curved = np.stack([np.ones(field.size), y.ravel(), x.ravel(), (x**2 + y**2).ravel()], 1)
        fitted, *_ = np.linalg.lstsq(curved, field.ravel(), rcond=None)
        assert fitted[3] < -0.22, seed  # without the vignette -0.09 to -0.18 on these seeds
        assert np.abs(field.ravel() - curved @ fitted).max() > 0.03, seed


def test_grain_keeps_part_of_each_pixel() -> None:
    alpha = np.ones((50, 50), np.float32)
    grainy = distortions.grain(alpha, np.random.default_rng(0))
    assert grainy.min() >= 0.35 and grainy.max() <= 1 and grainy.std() > 0.1
    assert grainy.min() < 0.37 and grainy.max() > 0.98  # the whole 35-100% is drawn


@pytest.mark.parametrize("kind", ["ruled", "stray"])
def test_clutter_adds_ink_outside_the_digit_only(kind: str) -> None:
    alpha = np.zeros((90, 120), np.float32)
    box = (20, 40, 50, 30)  # top, left, height, width
    alpha[20:70, 40:70] = 0.8
    for seed in range(5):
        out = distortions.clutter(alpha, kind, box, np.random.default_rng(seed))
        assert np.array_equal(out[20:70, 40:70], alpha[20:70, 40:70])  # the digit is kept
        outside = out.copy()
        outside[20:70, 40:70] = 0
        assert outside.max() > 0.35, seed
        if kind == "ruled":
            across = np.flatnonzero((out > 0.3).all(axis=1))  # a line across the whole canvas
            foot = (20 + 50 - 50 // 8 - 2, 20 + 50 + 4 + 2)  # the digit's foot, the line's width
            assert across.size and foot[0] <= across.min() <= across.max() <= foot[1], seed
        else:
            cols = np.flatnonzero(outside.any(axis=0))
            assert np.ptp(cols) < 20  # one short stroke beside the digit, not a line
    with pytest.raises(ValueError, match="unknown clutter"):
        distortions.clutter(alpha, "coffee", box, np.random.default_rng(0))
