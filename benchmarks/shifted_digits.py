"""MNIST digits re-rendered as a shifted distribution that looks like user photos or scans.

Each digit is upscaled, shifted by `style` -- "rotated" (turned 30-45 degrees either way),
"thick" (strokes dilated by a disc), or "plain" (no shift: the control) -- then drawn as dark ink
on light paper at a random size and position in a larger canvas and saved as an 8-bit greyscale
PNG. Pure numpy + Pillow; every random choice comes from the caller's `rng`, so a seed fixes the
bytes. The renderings pass `mnist_pipeline.data.preprocess.preprocess_bytes`.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

STYLES = ("rotated", "thick", "plain")
UPSCALE = 4  # working resolution: 28 px -> 112 px
ANGLE = (30.0, 45.0)  # degrees, either direction
THICKEN = (2.0, 3.0)  # dilation radius in MNIST pixels (x UPSCALE at the working resolution)
HEIGHT = (40, 120)  # digit (ink bounding box) height in the PNG, px
MAX_SIDE = 150  # cap on the digit's longer side, px (wide rotated digits)
CANVAS = (80, 200)  # canvas side, px (each side drawn separately)
MARGIN = 8  # paper kept clear around the digit, px
PAPER = (200, 250)  # background grey level
INK = (0, 60)  # ink grey level
NOISE = (0.0, 4.0)  # std of the Gaussian sensor noise, grey levels


def _disc_dilate(ink: np.ndarray, radius: float) -> np.ndarray:
    """Grey dilation of `ink` by a disc of `radius` pixels (the max over the disc's offsets)."""
    r = int(np.floor(radius))
    padded = np.pad(ink, r)
    out = np.zeros_like(ink)
    h, w = ink.shape
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            if dy * dy + dx * dx <= radius * radius:
                np.maximum(out, padded[r + dy : r + dy + h, r + dx : r + dx + w], out=out)
    return out


def _shifted_ink(image: np.ndarray, style: str, angle: float, radius: float) -> Image.Image:
    """The digit at UPSCALE x resolution as an "L" ink image (255 = ink), shifted by `style`."""
    size = image.shape[1] * UPSCALE, image.shape[0] * UPSCALE
    big = Image.fromarray(image).resize(size, Image.Resampling.BICUBIC)
    if style == "thick":
        big = Image.fromarray(_disc_dilate(np.asarray(big), radius * UPSCALE))
    if style == "rotated":
        big = big.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=0)
    return big


def _crop(ink: Image.Image) -> Image.Image:
    """The bounding box of the clearly inked pixels (> 25% of full ink)."""
    pixels = np.asarray(ink)
    rows = np.flatnonzero((pixels > 64).any(axis=1))
    cols = np.flatnonzero((pixels > 64).any(axis=0))
    if rows.size == 0:
        raise ValueError("the digit has no ink")
    return ink.crop((int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1))


def render_shifted(image: np.ndarray, rng: np.random.Generator, style: str = "rotated") -> bytes:
    """One MNIST digit (uint8 [28, 28], white on black) -> PNG bytes of a shifted rendering."""
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; expected one of {', '.join(STYLES)}")
    image = np.asarray(image)
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 [H, W] digit, got {image.dtype} {image.shape}")
    # Every draw happens in the same order for every style, so styles share layouts per seed.
    angle = float(rng.uniform(*ANGLE)) * float(rng.choice([-1.0, 1.0]))
    radius = float(rng.uniform(*THICKEN))
    height = float(rng.uniform(*HEIGHT))
    paper, ink_level = float(rng.uniform(*PAPER)), float(rng.uniform(*INK))
    sigma = float(rng.uniform(*NOISE))

    digit = _crop(_shifted_ink(image, style, angle, radius))
    scale = min(height / digit.height, MAX_SIDE / digit.width)
    dw, dh = max(1, round(digit.width * scale)), max(1, round(digit.height * scale))
    digit = digit.resize((dw, dh), Image.Resampling.BICUBIC)

    cw, ch = (int(rng.integers(max(CANVAS[0], d + 2 * MARGIN), CANVAS[1] + 1)) for d in (dw, dh))
    left = int(rng.integers(MARGIN, cw - dw - MARGIN + 1))
    top = int(rng.integers(MARGIN, ch - dh - MARGIN + 1))
    alpha = np.zeros((ch, cw), np.float32)
    alpha[top : top + dh, left : left + dw] = np.asarray(digit, np.float32) / 255
    grey = paper - alpha * (paper - ink_level) + rng.normal(0.0, sigma, size=alpha.shape)

    buffer = io.BytesIO()
    Image.fromarray(np.clip(np.rint(grey), 0, 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def shifted_set(
    images: np.ndarray, labels: np.ndarray, seed: int, style: str = "rotated"
) -> list[tuple[bytes, int]]:
    """Deterministic (same seed -> identical bytes) renderings of many digits, with labels."""
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    rng = np.random.default_rng(seed)
    return [
        (render_shifted(image, rng, style), int(label))
        for image, label in zip(images, labels, strict=True)
    ]
