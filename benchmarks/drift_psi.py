"""PSI of live-like traffic against a model's MNIST test drift reference: how big normal
traffic's PSI is (false alarms) and how big shifted traffic's is (serve.drift_threshold).

    python -m benchmarks.drift_psi [--onnx models/model.onnx] [--mnist data/mnist] [--window 500]

The reference is measured as registration does (the model's digit and confidence per MNIST test
image, and the images' statistics); each row is the PSI per feature of `--repeats` windows of
`--window` test images drawn at random: as they are (normal traffic), photographed and
preprocessed like an upload (benchmarks/shifted_digits.py "plain", then preprocess_bytes),
photographed rotated 30-45 degrees or with thick strokes, turned 90 degrees, and inverted.
Printed: the median and the largest PSI of each feature over the windows.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.arguments import existing_file, existing_folder, positive_int
from benchmarks.machine import cpu_name
from benchmarks.shifted_digits import render_shifted
from mnist_pipeline.core.contract import INPUT_NAME, PROBABILITIES
from mnist_pipeline.data import idx
from mnist_pipeline.data.preprocess import preprocess_bytes
from mnist_pipeline.export.session import open_session
from mnist_pipeline.monitoring import drift


def test_images(folder: Path) -> np.ndarray:
    """MNIST test as uint8 [N, 28, 28], from decompressed or gzipped IDX files."""
    for name in ("t10k-images-idx3-ubyte", "t10k-images-idx3-ubyte.gz"):
        if (folder / name).is_file():
            return idx.parse_images(idx.maybe_gunzip((folder / name).read_bytes()), name)
    raise SystemExit(f"no MNIST test images in {folder}")


def photographed(style: str) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
    def shift(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.stack(
            [preprocess_bytes(render_shifted(image, rng, style), "png") for image in images]
        )

    return shift


SHIFTS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "MNIST test (normal traffic)": lambda images, _: images / 255.0,
    "photographed, preprocessed": photographed("plain"),
    "photographed, rotated 30-45 deg": photographed("rotated"),
    "photographed, thick strokes": photographed("thick"),
    "turned 90 deg": lambda images, _: np.rot90(images / 255.0, axes=(1, 2)),
    "inverted": lambda images, _: 1.0 - images / 255.0,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", type=existing_file, default=Path("models/model.onnx"))
    parser.add_argument("--mnist", type=existing_folder, default=Path("data/mnist"))
    parser.add_argument("--window", type=positive_int, default=500)
    parser.add_argument("--repeats", type=positive_int, default=20)
    args = parser.parse_args()
    session = open_session(args.onnx.read_bytes(), threads=1)

    def answers(digits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        batch = digits.astype(np.float32)[:, None]
        probabilities = session.run([PROBABILITIES], {INPUT_NAME: batch})[0]
        return probabilities.argmax(axis=1), probabilities.max(axis=1)

    images = test_images(args.mnist)
    ref = drift.reference(images / 255.0, *answers(images / 255.0))
    rng = np.random.default_rng(0)
    print(f"{args.onnx}, window {args.window}, {args.repeats} windows each; CPU {cpu_name()}")
    print("| traffic | " + " | ".join(drift.FEATURES) + " |")
    print("|---" * (len(drift.FEATURES) + 1) + "|")
    for name, shift in SHIFTS.items():
        found = []
        for _ in range(args.repeats):
            chosen = images[rng.choice(len(images), args.window, replace=False)]
            digits = shift(chosen, rng)
            window = drift.features(digits, *answers(digits))
            found.append(drift.compare(ref, window))
        cells = [
            f"{np.median([f[k] for f in found]):.3f} ({max(f[k] for f in found):.3f})"
            for k in drift.FEATURES
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
