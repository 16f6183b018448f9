"""Shifted renderings of synthetic digits: determinism, paper look, sizes, rotation, thickness."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image

from benchmarks.shifted_digits import STYLES, render_shifted, shifted_set
from mnist_pipeline.data.preprocess import preprocess_bytes


def bar() -> np.ndarray:
    """A vertical bar, 20 x 2 pixels, white on black."""
    digit = np.zeros((28, 28), np.uint8)
    digit[4:24, 13:15] = 255
    return digit


def ring() -> np.ndarray:
    """A ring of radius 8 and width 2 around the centre, white on black."""
    rows, cols = np.indices((28, 28))
    distance = np.hypot(rows - 13.5, cols - 13.5)
    return np.where(np.abs(distance - 8) <= 1, 255, 0).astype(np.uint8)


def decode(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG" and image.mode == "L"
        return np.asarray(image)


def border(grey: np.ndarray) -> np.ndarray:
    return np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])


def tilt_degrees(digit: np.ndarray) -> float:
    """Angle between the ink's principal axis and the vertical, in [0, 90]."""
    rows, cols = np.indices(digit.shape)
    weights = digit / digit.sum()
    cy, cx = (weights * rows).sum(), (weights * cols).sum()
    dy, dx = rows - cy, cols - cx
    cov = np.array(
        [
            [(weights * dy * dy).sum(), (weights * dy * dx).sum()],
            [(weights * dy * dx).sum(), (weights * dx * dx).sum()],
        ]
    )
    axis = np.linalg.eigh(cov)[1][:, -1]  # (row, col) of the largest eigenvalue
    return math.degrees(math.acos(min(1.0, abs(float(axis[0])))))


def ink_pixels(png: bytes) -> int:
    return int((preprocess_bytes(png, "digit") > 0.5).sum())


def test_same_seed_gives_identical_bytes_and_another_seed_does_not() -> None:
    images, labels = np.stack([bar(), ring(), bar()]), np.array([1, 0, 1])
    for style in STYLES:
        first = shifted_set(images, labels, seed=3, style=style)
        assert first == shifted_set(images, labels, seed=3, style=style)
        assert [label for _, label in first] == [1, 0, 1]
        other = shifted_set(images, labels, seed=4, style=style)
        assert all(a != b for (a, _), (b, _) in zip(first, other, strict=True))


def test_png_is_greyscale_dark_ink_on_light_paper() -> None:
    rng = np.random.default_rng(0)
    for style in STYLES:
        for digit in (bar(), ring()):
            grey = decode(render_shifted(digit, rng, style))
            assert np.median(border(grey)) > 150
            assert grey.min() <= 80


def test_canvas_and_digit_sizes_vary_within_the_ranges() -> None:
    rng = np.random.default_rng(1)
    canvases, heights, corners = [], [], set()
    for _ in range(40):
        grey = decode(render_shifted(ring(), rng, "plain"))
        rows = np.flatnonzero((grey < 150).any(axis=1))
        cols = np.flatnonzero((grey < 150).any(axis=0))
        canvases.append(grey.shape)
        heights.append(rows[-1] - rows[0] + 1)
        corners.add((rows[0], cols[0]))
    assert all(80 <= side <= 200 for shape in canvases for side in shape)
    assert len({h for h, _ in canvases}) > 10 and any(h != w for h, w in canvases)
    assert all(36 <= h <= 124 for h in heights)
    assert min(heights) < 60 and max(heights) > 100
    assert len(corners) > 30


def test_rotated_tilts_a_vertical_bar_by_30_to_45_degrees_both_ways() -> None:
    rng = np.random.default_rng(2)
    signs = set()
    for _ in range(12):
        digit = preprocess_bytes(render_shifted(bar(), rng, "rotated"), "bar")
        assert 28 <= tilt_degrees(digit) <= 47
        rows, cols = np.nonzero(digit > 0.5)
        signs.add(np.sign(np.corrcoef(rows, cols)[0, 1]))
    assert signs == {-1.0, 1.0}
    upright = preprocess_bytes(render_shifted(bar(), rng, "plain"), "bar")
    assert tilt_degrees(upright) < 3


def test_thick_has_much_more_ink_after_preprocessing() -> None:
    for seed in range(5):
        thin = ink_pixels(render_shifted(ring(), np.random.default_rng(seed), "plain"))
        thick = ink_pixels(render_shifted(ring(), np.random.default_rng(seed), "thick"))
        assert thick > 1.8 * thin


def test_every_rendering_passes_preprocessing() -> None:
    images = np.stack([bar(), ring(), np.maximum(bar(), ring())])
    for style in STYLES:
        for png, _ in shifted_set(images.repeat(5, axis=0), np.zeros(15), seed=5, style=style):
            digit = preprocess_bytes(png, style)
            assert digit.shape == (28, 28) and digit.max() > 0.5


def test_bad_inputs_are_refused() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="unknown style"):
        render_shifted(bar(), rng, "blurred")
    with pytest.raises(ValueError, match="uint8"):
        render_shifted(bar().astype(np.float32), rng)
    with pytest.raises(ValueError, match="labels"):
        shifted_set(np.stack([bar()]), np.array([1, 2]), seed=0)
    with pytest.raises(ValueError, match="no ink"):
        render_shifted(np.zeros((28, 28), np.uint8), rng)
