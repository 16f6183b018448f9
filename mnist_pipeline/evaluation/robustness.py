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
generator, so a large set is rendered by several processes with the same result: the caller's
draws one share while fresh interpreters (`python -I -c`, with the caller's exact sys.path, so
the same code; a multiprocessing pool would import the caller's main module again) draw the
others; one that fails, hangs or cannot start has its share drawn by the caller instead. A
renderer whose sources on disk differ from those the caller loaded (a checkout switched to
another commit while a run was evaluating) refuses, so every share is drawn by the caller's code.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from mnist_pipeline.core.imports import import_closure, sources_sha256
from mnist_pipeline.data.preprocess import ImageError, preprocess_bytes, to_mnist
from mnist_pipeline.evaluation import distortions

# The sources this process loaded (this module and every project module it imports), read as it
# is imported: what the robustness cache keys on and what a renderer process must also run.
LOADED_SOURCES_SHA256 = sources_sha256(import_closure(__name__))

TRANSFORMS = (
    *("paper", "thick", "thin", "rotated", "blur", "noise", "jpeg"),
    *("marker", "pencil", "perspective", "uneven_light", "ruled", "stray"),
    *("squeezed", "stretched"),
)
LOSSY = frozenset({"jpeg"})  # saved as JPEG; the others as PNG (lossless)
UPSCALE = 4
INK_THRESHOLD = [255 if v > 64 else 0 for v in range(256)]  # the ink's bounding box: v > 64
PARALLEL_FROM = 1_500  # renderings (per_transform x transformations) worth starting processes
MAX_PROCESSES = 4  # the caller's and 3 more at most (15 uneven shares gain little beyond)
RENDERER_GRACE_S = 60.0  # a renderer may take this long, or 5x the caller's own share, to finish
CHILD = (  # a renderer process: the caller's sys.path, then _render_group(source, output, ...)
    "import json, sys; sys.path[:] = json.loads(sys.argv[1]); "
    "from mnist_pipeline.evaluation.robustness import _render_group; _render_group(*sys.argv[2:])"
)


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
    `workers` processes share the transformations (0: one per core, at most MAX_PROCESSES, for
    a set of at least PARALLEL_FROM renderings, else this process alone); the result is the
    same for any number."""
    if workers < 0:
        raise ValueError(f"workers must be 0 (automatic) or more, not {workers}")
    order = np.random.default_rng(seed).permutation(len(labels))[:per_transform]
    digits, wanted = images[order], labels[order]
    if workers == 0:
        large = len(order) * len(TRANSFORMS) >= PARALLEL_FROM
        workers = min(cpu_count(), MAX_PROCESSES) if large else 1
    workers = min(workers, len(TRANSFORMS))
    groups = [list(range(len(TRANSFORMS)))[i::workers] for i in range(workers)]
    rendered = _render_with_others(digits, wanted, seed, groups) if workers > 1 else {}
    for k in range(len(TRANSFORMS)):  # this process's share (and what others failed to draw)
        if k not in rendered:
            rendered[k] = render_transform(digits, wanted, k, seed)
    return {TRANSFORMS[k]: rendered[k] for k in range(len(TRANSFORMS))}


Rendered = dict[int, tuple[np.ndarray, np.ndarray]]


def _render_with_others(
    digits: np.ndarray, labels: np.ndarray, seed: int, groups: list[list[int]]
) -> Rendered:
    """groups[0] drawn here while a renderer process draws each other group; what a renderer
    did not deliver is left out (a warning says why) for the caller to draw."""
    rendered: Rendered = {}
    try:
        with tempfile.TemporaryDirectory(prefix="robustness-") as tmp:
            folder, started = Path(tmp), []
            try:
                np.savez(folder / "digits.npz", digits=digits, labels=labels)
                for i, group in enumerate(groups[1:]):
                    started.append((group, _start(folder, i, seed, group), folder / f"{i}.npz"))
                began = time.monotonic()
                for k in groups[0]:
                    rendered[k] = render_transform(digits, labels, k, seed)
                grace = max(RENDERER_GRACE_S, 5 * (time.monotonic() - began))
                deadline = time.monotonic() + grace  # one for all: hung renderers cost it once
                for group, process, output in started:
                    rendered.update(_collect(group, process, output, deadline))
            finally:  # interrupted: no renderer outlives the call (a no-op for finished ones)
                for _, process, _ in started:
                    process.kill()
                    process.wait()
    except OSError as exc:  # no temporary folder or no process to be had: draw it all here
        print(f"warning: robustness renderers unavailable: {exc}", file=sys.stderr)
    return rendered


def _start(folder: Path, i: int, seed: int, group: list[int]) -> subprocess.Popen:
    """A renderer of `group`: a fresh interpreter with this one's sys.path (so the same code),
    isolated from PYTHON* variables; its errors go to a file the caller reports."""
    arguments = [json.dumps(sys.path), str(folder / "digits.npz"), str(folder / f"{i}.npz")]
    arguments += [str(seed), str(os.getpid()), LOADED_SOURCES_SHA256, *map(str, group)]
    with open(folder / f"{i}.err", "wb") as errors:
        return subprocess.Popen(
            [sys.executable, "-I", "-c", CHILD, *arguments],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors,
        )  # fmt: skip


def _collect(
    group: list[int], process: subprocess.Popen, output: Path, deadline: float
) -> Rendered:
    """What a renderer wrote by `deadline` ({} with a warning when it failed or ran late)."""
    try:
        code = process.wait(max(deadline - time.monotonic(), 0.0))
    except subprocess.TimeoutExpired:
        print("warning: a robustness renderer did not finish in time", file=sys.stderr)
        return {}
    if code != 0:
        errors = output.with_suffix(".err").read_text(errors="replace").strip().splitlines()
        last = f": {errors[-1]}" if errors else ""
        print(f"warning: a robustness renderer exited {code}{last}", file=sys.stderr)
        return {}
    with np.load(output, allow_pickle=False) as stored:
        return {k: (stored[f"{k}.digits"], stored[f"{k}.labels"]) for k in group}


def _render_group(source: str, output: str, seed: str, parent: str, code: str, *ks: str) -> None:
    """A renderer process: TRANSFORMS[k] for each k of the digits in `source`, into `output`;
    it refuses when its sources are not those of the process that started it (`code`), and
    stops early once that process is gone."""
    if code != LOADED_SOURCES_SHA256:
        raise SystemExit(
            "the renderer's sources on disk differ from those the evaluate process loaded (the "
            "checkout changed while it ran): that process draws this share itself"
        )
    with np.load(source, allow_pickle=False) as stored:
        digits, labels = stored["digits"], stored["labels"]
    arrays = {}
    for k in map(int, ks):
        if os.getppid() != int(parent):
            raise SystemExit("the evaluate process that started this renderer is gone")
        rendered = render_transform(digits, labels, k, int(seed))
        arrays[f"{k}.digits"], arrays[f"{k}.labels"] = rendered
    with open(output, "wb") as handle:  # a handle: np.savez would append .npz to a name
        np.savez(handle, **arrays)
