"""MNIST-style preprocessing of real images (pure numpy + Pillow; no torch, no model).

The reference for ports to other runtimes (Node.js, browser). `round(x)` below means
floor(x + 0.5); "median" of an even count is the mean of the two middle values, computed as
their float32 sum halved; arrays are indexed [row, column] from 0, and a pixel's coordinate is
its index (its centre).

1. Decode. Refuse a missing file, a file that is not a decodable image of a listed format (PNG,
   JPEG, GIF, BMP, TIFF, WebP, PBM/PGM/PPM), one whose image data is cut short (a PNG missing
   only what follows its image data is read, as Pillow reads it), and any image over
   MAX_PIXELS (50,000,000) pixels, checked from the header before decoding (decoding and
   preprocessing hold about 32 bytes a pixel at once: 1.6 GB at the limit; `serve.max_pixels`
   keeps the server's far lower). Use the first frame of multi-frame files and apply the EXIF
   orientation tag.
2. Greyscale g in [0, 1] (0 black, 1 white), from 8-bit channels: with an alpha channel (or
   palette transparency), composite the luma over white: g = (y * a + 255 * (1 - a)) / 255,
   y = 0.299 R + 0.587 G + 0.114 B, a = A / 255 (float32, clipped to [0, 1]); if that g is
   uniform (max(g) - min(g) < MIN_CONTRAST: light ink on a transparent sheet vanishes on
   white), composite over black instead: g = y * a / 255. Without alpha g = y / 255; a
   greyscale image has g = L / 255, a 16-bit greyscale one g = I / 65535, a 32-bit float one
   (TIFF) g = F as stored. Refuse 32-bit pixels outside what those read: integers outside
   [0, 65535], floats outside [0, 1] or not finite (ports that decode only PNG and JPEG, as the
   JavaScript one does, never see them).
3. Polarity. border = the pixels of the first and last row and column, each pixel once (all
   pixels if a side is shorter than 3); b = median(border), the background. If b > 0.5 the
   ink is dark (reach = b - min(g), other = max(g) - b), otherwise light (reach = max(g) - b,
   other = b - min(g)); float64 arithmetic on the float32 values. If reach < MIN_CONTRAST <=
   other, nothing on that side could be ink (step 4 would call the image blank): take the
   other polarity. Dark ink: ink = 1 - g and bg = 1 - b; light ink: ink = g and bg = b. (A
   dim photo of white paper, background below 0.5, and chalk on light grey paper, above 0.5,
   are read this way; a dim photo with a glint or strong sensor noise is not.)
4. Contrast. peak = max(ink). If peak - bg < MIN_CONTRAST (0.1) the image is blank: refuse.
   d = (ink - bg) / (peak - bg) (float32); noise = median(|d|) over the border pixels (as in
   step 3); threshold t = min(max(INK_THRESHOLD (0.2), NOISE_MADS (6) * noise),
   MAX_THRESHOLD (0.5)) (float64, compared in float32): 6 median absolute deviations are 4
   standard deviations of Gaussian sensor noise. ink = clip(d, 0, 1), then every value < t
   becomes 0 (paper texture, sensor and compression noise).
5. Despeckle: an ink pixel (ink > 0) none of whose 8 neighbours has ink becomes 0. Keep the
   digit, not what lies beside it: label the 8-connected components of the pixels with ink > 0;
   the main one has the largest sum of ink (float64, summed in row-major order; on a tie the
   one whose first pixel comes first in row-major order). Keep it and every component whose
   bounding box overlaps the main component's bounding box (shares at least one row and one
   column with it); the other components' ink becomes 0 (a speck, a neighbour's stroke or a
   line clear of the digit). Then crop to the bounding box of the pixels with ink > 0 (first
   to last such row and column).
6. Scale the crop (h x w) so its longer side is 20: s = 20 / max(h, w), new size
   nh = max(1, round(h * s)), nw = max(1, round(w * s)). Interpolation: Pillow BILINEAR on a
   32-bit float ("F") image, without reducing_gap, i.e. a separable triangle filter widened by
   the reduction factor (anti-aliased). The horizontal pass (the width) first, then the vertical
   one, except when the height shrinks by more than twice as many pixels as the width: then the
   vertical first (Pillow 13's order); a pass whose length does not change is skipped. Per axis,
   input length n, output length m: scale = n / m, fs = max(scale, 1), support = fs; for output i:
   centre = (i + 0.5) * scale, lo = max(trunc(centre - support + 0.5), 0),
   hi = min(trunc(centre + support + 0.5), n), ss = 1 / fs; for x in [lo, hi):
   w_x = max(0, 1 - |x - centre + 0.5| * ss) (multiplied by ss, not divided by fs: the two
   differ in the last bits), k_x = w_x / sum(w) (normalised first, when sum(w) != 0);
   out_i = sum(k_x * in_x), added in float64 in order of x and stored as float32.
7. Centre. With v the scaled crop, cy = sum(v * row) / sum(v), cx = sum(v * col) / sum(v);
   paste v into a 28x28 zero image with its top-left corner at (round(14 - cy),
   round(14 - cx)), dropping what falls outside. (MNIST's test digits have their centre of
   mass at (14.0, 14.0) on average in these coordinates.)
8. Result: float32 [28, 28] in [0, 1], white digit on black; the model input is [N, 1, 28, 28].

Steps 1-2 are in data/decode.py.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from mnist_pipeline.core.contract import IMAGE_SIZE
from mnist_pipeline.data.decode import (  # steps 1-2
    MAX_PIXELS,
    MIN_CONTRAST,
    ImageError,
    decode_grey,
    load_grey,
)

INK_THRESHOLD = 0.2
NOISE_MADS = 6.0
MAX_THRESHOLD = 0.5
BOX = 20
CENTRE = 14.0
_EIGHT_NEIGHBOURS = np.ones((3, 3), bool)  # connectivity of ink pixels (step 5)


def round_half_up(x: float) -> int:
    return math.floor(x + 0.5)


def _border(grey: np.ndarray) -> np.ndarray:
    h, w = grey.shape
    if h < 3 or w < 3:
        return grey.ravel()
    return np.concatenate([grey[0, :], grey[-1, :], grey[1:-1, 0], grey[1:-1, -1]])


def median(values: np.ndarray) -> float:
    """np.median of a 1-D array, the same value (the middle one, or the mean of the two middle
    ones in the array's dtype) in 2 instead of 13 us for a border's hundred pixels."""
    k = values.size // 2
    if values.size % 2:
        return float(np.partition(values, k)[k])
    lower, upper = np.partition(values, (k - 1, k))[k - 1 : k + 1]
    return float((lower + upper) / 2)


def _dark_ink(grey: np.ndarray, background: float) -> bool:
    """Step 3: whether the ink is darker than the background: a light background says so,
    unless nothing lies far enough below it to be ink while something lies above it."""
    below = background - float(grey.min())
    above = float(grey.max()) - background
    reach, other = (below, above) if background > 0.5 else (above, below)
    flipped = reach < MIN_CONTRAST <= other
    return (background > 0.5) != flipped


def ink_map(grey: np.ndarray) -> np.ndarray:
    """Steps 3-4: greyscale -> ink in [0, 1] (0 background), faint values zeroed."""
    b = median(_border(grey))
    ink, bg = (1 - grey, 1 - b) if _dark_ink(grey, b) else (grey, b)
    peak = float(ink.max())
    if peak - bg < MIN_CONTRAST:
        raise ImageError(
            f"blank image: no ink found (contrast {max(peak - bg, 0):.3f} < {MIN_CONTRAST})"
        )
    scaled = ((ink - np.float32(bg)) / np.float32(peak - bg)).astype(np.float32)
    noise = median(np.abs(_border(scaled)))
    threshold = min(max(INK_THRESHOLD, NOISE_MADS * noise), MAX_THRESHOLD)
    ink = scaled.clip(0, 1)
    ink[ink < np.float32(threshold)] = 0
    return ink


def despeckle(ink: np.ndarray) -> np.ndarray:
    """Step 5, first part: a copy with every isolated ink pixel (no 8-neighbour inked) zeroed."""
    h, w = ink.shape
    inked = np.zeros((h + 2, w + 2), np.uint8)
    inked[1:-1, 1:-1] = ink > 0
    across = inked[:, :-2] + inked[:, 1:-1] + inked[:, 2:]  # separable 3x3 count, self included
    box = across[:-2] + across[1:-1] + across[2:]
    return np.where(box > inked[1:-1, 1:-1], ink, np.float32(0))


def keep_digit(ink: np.ndarray) -> np.ndarray:
    """Step 5, second part: the ink of the main component and of those whose boxes overlap its
    box; every other component's ink zeroed (`ink` itself when it has one component)."""
    labels, count = ndimage.label(ink > 0, structure=_EIGHT_NEIGHBOURS)
    if count <= 1:
        return ink
    mass = np.bincount(labels.ravel(), weights=ink.ravel().astype(np.float64))[1:]
    top, bottom, left, right = _boxes(labels, count)
    main = int(np.argmax(mass))
    kept = (top <= bottom[main]) & (bottom >= top[main]) & (left <= right[main])
    kept &= right >= left[main]
    return np.where(np.concatenate([[False], kept])[labels], ink, np.float32(0))


def _boxes(labels: np.ndarray, count: int) -> tuple[np.ndarray, ...]:
    """(top, bottom, left, right) of components 1..count of `labels`, each an array (vectorised:
    an image of noise has hundreds of thousands)."""
    rows, cols = np.nonzero(labels)
    order = np.argsort(labels[rows, cols], kind="stable")
    rows, cols = rows[order], cols[order]
    starts = np.searchsorted(labels[rows, cols], np.arange(1, count + 1))
    return (
        np.minimum.reduceat(rows, starts),
        np.maximum.reduceat(rows, starts),
        np.minimum.reduceat(cols, starts),
        np.maximum.reduceat(cols, starts),
    )


def crop_to_ink(ink: np.ndarray) -> np.ndarray:
    """Step 5, last part: the bounding box of the nonzero pixels."""
    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    if rows.size == 0:
        raise ImageError("blank image: no ink found")
    return ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def fit_box(crop: np.ndarray, box: int = BOX) -> np.ndarray:
    """Step 6: scale so the longer side is `box`, keeping the aspect ratio (Pillow BILINEAR)."""
    h, w = crop.shape
    s = box / max(h, w)
    size = (max(1, round_half_up(w * s)), max(1, round_half_up(h * s)))  # PIL: (width, height)
    resized = Image.fromarray(crop.astype(np.float32)).resize(size, Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float32)


def centre_by_mass(digit: np.ndarray, size: int = IMAGE_SIZE, centre: float = CENTRE) -> np.ndarray:
    """Step 7: paste into a size x size field with the centre of mass at (centre, centre)."""
    total = float(digit.sum(dtype=np.float64))
    rows, cols = np.indices(digit.shape)
    cy = float((digit * rows).sum(dtype=np.float64)) / total
    cx = float((digit * cols).sum(dtype=np.float64)) / total
    top, left = round_half_up(centre - cy), round_half_up(centre - cx)
    out = np.zeros((size, size), dtype=np.float32)
    h, w = digit.shape
    r0, c0 = max(top, 0), max(left, 0)
    r1, c1 = min(top + h, size), min(left + w, size)
    if r0 < r1 and c0 < c1:
        out[r0:r1, c0:c1] = digit[r0 - top : r1 - top, c0 - left : c1 - left]
    return out


def to_mnist(grey: np.ndarray) -> np.ndarray:
    """Steps 3-8: float greyscale [H, W] (0 black, 1 white) -> float32 [28, 28] MNIST digit."""
    grey = np.asarray(grey, dtype=np.float32)
    if grey.ndim != 2 or grey.size == 0:
        raise ImageError(f"expected a non-empty 2-D greyscale array, got shape {grey.shape}")
    if not np.isfinite(grey).all():
        raise ImageError("the greyscale array holds NaN or infinity")
    # Cropping before despeckling too changes nothing (outside the box there is no ink) and
    # leaves despeckle a smaller array.
    return centre_by_mass(fit_box(crop_to_ink(keep_digit(despeckle(crop_to_ink(ink_map(grey)))))))


def preprocess_file(path: Path) -> np.ndarray:
    """All steps: an image file -> float32 [28, 28]; errors name the file."""
    return _named(load_grey(path), str(path))


def preprocess_bytes(
    data: bytes, name: str, max_pixels: int = MAX_PIXELS, setting: str | None = None
) -> np.ndarray:
    """All steps for an image in memory -> float32 [28, 28]; errors start with `name` (one over
    `max_pixels` names the `setting` that chose it)."""
    return _named(decode_grey(data, name, max_pixels, setting), name)


def _named(grey: np.ndarray, name: str) -> np.ndarray:
    try:
        return to_mnist(grey)
    except ImageError as exc:
        raise ImageError(f"{name}: {exc}") from None
