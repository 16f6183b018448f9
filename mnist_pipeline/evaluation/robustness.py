"""The robustness set: MNIST test digits turned into what real photos and scans look like.

Each transformation draws a digit as dark ink on light paper at a random size and position in a
larger canvas (as a phone photo or a scan of one digit does), then distorts it one way:

    paper         nothing more
    thick         strokes thickened (a 7 px max filter at 4x: a felt pen)
    thin          strokes thinned (a 3 px min filter at 4x: a fine pen)
    rotated       turned by 8-15 degrees either way
    blur          Gaussian blur (out of focus)
    noise         Gaussian sensor noise (sigma 8-16 grey levels)
    jpeg          saved as JPEG at quality 10-30
    marker        a wide marker (a 13 px max filter at 4x)
    pencil        a light grainy pencil: thin strokes, 60-110 grey levels below the paper, grain
    perspective   a phone photo at an angle (keystone: the far edge 25-45% narrower)
    uneven_light  a phone photo's light: brightness gradient, vignette and a soft shadow
    ruled         written on a notebook's ruled line, printed across the whole canvas
    stray         beside a neighbouring digit's stray stroke
    squeezed      45-70% of its width (a narrow hand)
    stretched     140-190% of its width (a wide hand)

(distortions.py has the building blocks of the last eight) and the result goes through the same
preprocessing `predict` uses (preprocess.py). Every random choice comes from one seed, so the
set is the same on every run. Torch-free (numpy + Pillow). Each transformation draws from its own
generator, so a large set is rendered by one process per CPU core with the same result: the
others run this module (`python -m mnist_pipeline.evaluation.robustness`), which imports no more
than it needs, where a multiprocessing pool would import the caller's main module again.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from mnist_pipeline.data.preprocess import ImageError, preprocess_bytes, to_mnist
from mnist_pipeline.evaluation import distortions

TRANSFORMS = (
    *("paper", "thick", "thin", "rotated", "blur", "noise", "jpeg"),
    *("marker", "pencil", "perspective", "uneven_light", "ruled", "stray"),
    *("squeezed", "stretched"),
)
LOSSY = frozenset({"jpeg"})  # saved as JPEG; the others as PNG (lossless)
UPSCALE = 4
INK_THRESHOLD = [255 if v > 64 else 0 for v in range(256)]  # the ink's bounding box: v > 64
PARALLEL_FROM = 1_500  # renderings (per_transform x transformations) worth starting processes


def _ink(digit: np.ndarray, transform: str, rng: np.random.Generator) -> Image.Image:
    """The digit as an 'L' ink image (255 = ink) at UPSCALE x, with the stroke changes."""
    big = Image.fromarray(digit).resize((28 * UPSCALE, 28 * UPSCALE), Image.Resampling.BICUBIC)
    if transform == "thick":
        big = distortions.max_filter(big, 2 * UPSCALE - 1)
    elif transform == "marker":
        big = distortions.max_filter(big, 3 * UPSCALE + 1)
    elif transform in ("thin", "pencil"):
        big = big.filter(ImageFilter.MinFilter(3))
    elif transform == "rotated":
        angle = float(rng.uniform(8, 15) * rng.choice([-1, 1]))
        big = big.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
    elif transform in ("squeezed", "stretched"):
        factor = rng.uniform(0.45, 0.70) if transform == "squeezed" else rng.uniform(1.4, 1.9)
        width = max(1, round(big.width * float(factor)))
        big = big.resize((width, big.height), Image.Resampling.BICUBIC)
    box = big.point(INK_THRESHOLD).getbbox()
    return big.crop(box) if box else big


def draw(digit: np.ndarray, transform: str, rng: np.random.Generator) -> Image.Image:
    """One MNIST digit (uint8 [28, 28], white on black) -> the photo or scan, an 'L' image
    (dark ink on light paper) before it is saved as a file (`encode`)."""
    if transform not in TRANSFORMS:
        raise ValueError(f"unknown transformation {transform!r}; known: {', '.join(TRANSFORMS)}")
    ink = _ink(digit, transform, rng)
    height = int(rng.integers(40, 121))
    width = max(1, round(ink.width * height / ink.height))
    ink = ink.resize((width, height), Image.Resampling.BICUBIC)
    canvas_w = int(rng.integers(max(80, width + 16), max(200, width + 16) + 1))
    canvas_h = int(rng.integers(max(80, height + 16), max(200, height + 16) + 1))
    left = int(rng.integers(8, canvas_w - width - 8 + 1))
    top = int(rng.integers(8, canvas_h - height - 8 + 1))
    paper, ink_level = float(rng.uniform(190, 245)), float(rng.uniform(10, 70))
    alpha = np.zeros((canvas_h, canvas_w), np.float32)
    alpha[top : top + height, left : left + width] = np.asarray(ink, np.float32) / 255
    if transform == "pencil":
        alpha, ink_level = distortions.grain(alpha, rng), paper - float(rng.uniform(60, 110))
    elif transform in ("ruled", "stray"):
        alpha = distortions.clutter(alpha, transform, (top, left, height, width), rng)
    elif transform == "perspective":
        alpha = distortions.perspective(alpha, rng)
    grey = paper - alpha * (paper - ink_level)
    if transform == "uneven_light":
        grey = grey * distortions.light_field(grey.shape, rng)
    if transform == "noise":
        grey = grey + rng.normal(0, rng.uniform(8, 16), grey.shape)
    image = Image.fromarray(np.clip(np.rint(grey), 0, 255).astype(np.uint8))
    if transform == "blur":
        image = image.filter(ImageFilter.GaussianBlur(height / 28 * rng.uniform(0.8, 1.4)))
    return image


def encode(image: Image.Image, transform: str, rng: np.random.Generator) -> bytes:
    """The drawn image as a file: JPEG (quality 10-30) for the lossy transformations, else PNG."""
    out = io.BytesIO()
    if transform in LOSSY:
        image.save(out, format="JPEG", quality=int(rng.integers(10, 31)))
    else:
        image.save(out, format="PNG")
    return out.getvalue()


def render(digit: np.ndarray, transform: str, rng: np.random.Generator) -> bytes:
    """One MNIST digit (uint8 [28, 28], white on black) -> image file bytes (PNG, or JPEG)."""
    image = draw(digit, transform, rng)
    return encode(image, transform, rng)


def preprocessed(digit: np.ndarray, transform: str, rng: np.random.Generator) -> np.ndarray:
    """`preprocess_bytes(render(digit, transform, rng), transform)`, the same float32 [28, 28]
    (ImageError when preprocessing refuses it), without the PNG round trip: decoding a lossless
    8-bit greyscale PNG gives back its pixels, and preprocessing starts from g = L / 255."""
    image = draw(digit, transform, rng)
    if transform in LOSSY:
        return preprocess_bytes(encode(image, transform, rng), transform)
    try:
        return to_mnist(np.asarray(image, dtype=np.float32) / np.float32(255))
    except ImageError as exc:
        raise ImageError(f"{transform}: {exc}") from None


def render_transform(
    digits: np.ndarray, labels: np.ndarray, k: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """TRANSFORMS[k] of every uint8 digit, drawn from generator [seed, k] -> (preprocessed
    float32 digits [n, 28, 28], int64 labels [n]; -1 where preprocessing found no ink)."""
    transform, rng = TRANSFORMS[k], np.random.default_rng([seed, k])
    out = np.zeros((len(digits), 28, 28), np.float32)
    wanted = labels.astype(np.int64)
    for j, digit in enumerate(digits):
        try:
            out[j] = preprocessed(digit, transform, rng)
        except ImageError:
            wanted[j] = -1
    return out, wanted


def cpu_count() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def robustness_set(
    images: np.ndarray, labels: np.ndarray, per_transform: int, seed: int = 0, workers: int = 0
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """transformation -> (preprocessed float32 digits [n, 28, 28], labels [n]) for the first
    `per_transform` digits of a fixed random order, each transformation with its own draws.
    A rendering that preprocessing refuses (it found no ink) gets the label -1: a miss.
    `workers` processes share the transformations (0: one per core for a set of at least
    PARALLEL_FROM renderings, else this process alone); the result is the same for any number."""
    order = np.random.default_rng(seed).permutation(len(labels))[:per_transform]
    digits, wanted = images[order], labels[order]
    if workers == 0:
        workers = cpu_count() if len(order) * len(TRANSFORMS) >= PARALLEL_FROM else 1
    workers = min(workers, len(TRANSFORMS))
    groups = [list(range(len(TRANSFORMS)))[i::workers] for i in range(workers)]
    rendered: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    with tempfile.TemporaryDirectory(prefix="robustness-") as tmp:
        started = _start(digits, wanted, seed, groups[1:], Path(tmp)) if workers > 1 else []
        try:
            for k in groups[0]:  # this process's share, while the others render theirs
                rendered[k] = render_transform(digits, wanted, k, seed)
            for group, process, output in started:
                rendered.update(_collect(group, process, output))
        finally:  # interrupted: no renderer outlives the call (a no-op for finished ones)
            for _, process, _ in started:
                if process is not None:
                    process.kill()
                    process.wait()
    for k in range(len(TRANSFORMS)):  # what a failed process did not render
        if k not in rendered:
            rendered[k] = render_transform(digits, wanted, k, seed)
    return {TRANSFORMS[k]: rendered[k] for k in range(len(TRANSFORMS))}


Started = list[tuple[list[int], subprocess.Popen | None, Path]]


def _start(
    digits: np.ndarray, labels: np.ndarray, seed: int, groups: list[list[int]], folder: Path
) -> Started:
    """One `python -m` of this module per group, importing this same copy of the package."""
    source = folder / "digits.npz"
    np.savez(source, digits=digits, labels=labels)
    package_parent = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")]))
    started: Started = []
    for i, group in enumerate(groups):
        output = folder / f"rendered-{i}.npz"
        command = [sys.executable, "-m", __name__, str(source), str(output), str(seed)]
        try:
            process = subprocess.Popen(
                [*command, *map(str, group)], env={**os.environ, "PYTHONPATH": path}
            )
        except OSError as exc:
            print(f"warning: cannot start a robustness renderer: {exc}", file=sys.stderr)
            process = None
        started.append((group, process, output))
    return started


def _collect(
    group: list[int], process: subprocess.Popen | None, output: Path
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """What a renderer process wrote ({} when it failed: the caller renders it instead)."""
    if process is None:
        return {}
    if process.wait() != 0:
        print(f"warning: a robustness renderer exited {process.returncode}", file=sys.stderr)
        return {}
    with np.load(output, allow_pickle=False) as stored:
        return {k: (stored[f"{k}.digits"], stored[f"{k}.labels"]) for k in group}


def _render_group(source: str, output: str, seed: str, *ks: str) -> None:
    """A renderer process: TRANSFORMS[k] for each k of the digits in `source`, into `output`."""
    with np.load(source, allow_pickle=False) as stored:
        digits, labels = stored["digits"], stored["labels"]
    arrays = {}
    for k in map(int, ks):
        arrays[f"{k}.digits"], arrays[f"{k}.labels"] = render_transform(
            digits, labels, k, int(seed)
        )
    with open(output, "wb") as handle:  # a handle: np.savez would append .npz to a name
        np.savez(handle, **arrays)


if __name__ == "__main__":
    _render_group(*sys.argv[1:])
