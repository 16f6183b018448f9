"""How digits from sources unlike MNIST's scanner differ: the robustness set's building blocks.

Pure numpy + Pillow helpers that robustness.py applies to a rendered digit: a square max filter
(a wide marker nib), paper grain (a light pencil), a perspective warp (a phone held at an angle),
a light field (a brightness gradient, a vignette and a soft shadow across the paper), and
clutter beside the digit (a notebook's ruled line, a neighbouring digit's stray stroke). Every
random choice comes from the generator passed in.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image, ImageDraw


def max_filter(image: Image.Image, size: int) -> Image.Image:
    """A size x size maximum filter of an 'L' image, edges replicated (Pillow's MaxFilter,
    computed as two 1-D passes: a square window is separable)."""
    pad = size // 2
    a = np.pad(np.asarray(image), pad, mode="edge")
    a = sliding_window_view(a, size, axis=1).max(axis=-1)
    a = sliding_window_view(a, size, axis=0).max(axis=-1)
    return Image.fromarray(np.ascontiguousarray(a))


def grain(alpha: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pencil on paper: each pixel of the ink keeps a random 35-100% of its coverage."""
    return alpha * rng.uniform(0.35, 1.0, alpha.shape).astype(np.float32)


def perspective_coefficients(
    source: list[tuple[float, float]], target: list[tuple[float, float]]
) -> tuple[float, ...]:
    """Pillow's PERSPECTIVE data: the 8 coefficients that map each output point in `target`
    back to the input point in `source` (four (x, y) corners each)."""
    rows = []
    for (x, y), (u, v) in zip(target, source, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    rhs = np.array([c for point in source for c in point], dtype=np.float64)
    return tuple(float(c) for c in np.linalg.solve(np.array(rows, dtype=np.float64), rhs))


def perspective(alpha: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The ink coverage as a phone photo taken at an angle: the canvas keystoned (one edge
    narrowed by 25-45%, the sides leaning) with corners jittered by up to 4%, nothing cropped."""
    h, w = alpha.shape
    squeeze = float(rng.uniform(0.25, 0.45))
    jitter = rng.uniform(-0.04, 0.04, (4, 2)) * (w, h)
    inset = squeeze * w / 2
    corners = np.array([(0, 0), (w, 0), (w, h), (0, h)], dtype=np.float64)
    moved = corners.copy()
    edge = int(rng.integers(4))  # which edge is further from the lens: top, right, bottom, left
    if edge in (0, 2):
        first, second = (0, 1) if edge == 0 else (3, 2)
        moved[first, 0] += inset
        moved[second, 0] -= inset
    else:
        first, second = (1, 2) if edge == 1 else (0, 3)
        moved[first, 1] += squeeze * h / 2
        moved[second, 1] -= squeeze * h / 2
    moved = np.clip(moved + jitter, 0, (w, h))
    data = perspective_coefficients([tuple(p) for p in corners], [tuple(p) for p in moved])
    image = Image.fromarray(np.clip(np.rint(alpha * 255), 0, 255).astype(np.uint8))
    warped = image.transform((w, h), Image.Transform.PERSPECTIVE, data, Image.Resampling.BICUBIC)
    return np.asarray(warped, dtype=np.float32) / 255


def light_field(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Illumination of a phone photo, multiplying the paper and the ink: a linear gradient
    darkening by 15-30% across the canvas in a random direction, a vignette darkening the
    corners by 8-18%, and a soft-edged shadow (a half-plane 12-25% darker, on the gradient's
    darker side: the phone and the hand holding it block the light)."""
    h, w = shape
    rows, cols = np.indices(shape, dtype=np.float64)
    y, x = (rows + 0.5) / h - 0.5, (cols + 0.5) / w - 0.5  # centred, in [-0.5, 0.5]
    angle = rng.uniform(0, 2 * np.pi)
    along = x * np.cos(angle) + y * np.sin(angle)  # in [-0.71, 0.71]
    field = 1 - rng.uniform(0.15, 0.30) * (along - along.min()) / np.ptp(along)
    field *= 1 - rng.uniform(0.08, 0.18) * (x**2 + y**2) / 0.5
    shadow_angle = angle + rng.uniform(-np.pi / 3, np.pi / 3)  # on the darker side
    offset = rng.uniform(0.2, 0.4)  # the shadow's edge, from the centre, as a share of the canvas
    across = x * np.cos(shadow_angle) + y * np.sin(shadow_angle) - offset
    softness = rng.uniform(0.03, 0.08)
    field *= 1 - rng.uniform(0.12, 0.25) / (1 + np.exp(-np.clip(across / softness, -50, 50)))
    return field.astype(np.float32)


def clutter(
    alpha: np.ndarray, kind: str, box: tuple[int, int, int, int], rng: np.random.Generator
) -> np.ndarray:
    """A copy of the ink coverage with something beside the digit (top, left, height, width):
    `ruled` a printed line 1-3 px wide across the whole canvas, at 40-70% of the ink's
    darkness, near the digit's foot (written on the line); `stray` a neighbouring digit's
    stroke, as dark as the ink, 6-14 px left or right of the digit and 50-90% of its height."""
    top, left, height, width = box
    canvas = Image.new("L", (alpha.shape[1], alpha.shape[0]), 0)
    draw = ImageDraw.Draw(canvas)
    if kind == "ruled":
        row = top + height + int(rng.integers(-height // 8, 5))
        row = min(max(row, 0), alpha.shape[0] - 1)
        thick = int(rng.integers(1, 4))
        draw.line([(0, row), (alpha.shape[1] - 1, row)], fill=255, width=thick)
        strength = float(rng.uniform(0.4, 0.7))
    elif kind == "stray":
        gap = int(rng.integers(6, 15))
        x = left - gap if rng.random() < 0.5 else left + width + gap
        x = min(max(x, 1), alpha.shape[1] - 2)  # in the canvas, however narrow the margin
        length = height * float(rng.uniform(0.5, 0.9))
        y0 = top + float(rng.uniform(0, height - length))
        lean = float(rng.uniform(-0.25, 0.25)) * length
        stroke = max(2, round(height / 10))
        draw.line([(x + lean, y0), (x, y0 + length)], fill=255, width=stroke)
        strength = 1.0
    else:
        raise ValueError(f"unknown clutter {kind!r}; known: ruled, stray")
    extra = np.asarray(canvas, dtype=np.float32) / 255 * np.float32(strength)
    return np.maximum(alpha, extra)
