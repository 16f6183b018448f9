"""How large the drift monitor's PSI grows by chance on traffic drawn like its reference: what
`serve.drift_window` and `serve.drift_threshold` must leave room for (core/service_params.py).

    python -m benchmarks.drift_chance [--windows 100,150,200,300,500] [--runs 20] [--images 20000]

Each run streams `--images` images whose six features fall in ten equally likely bins (the
reference's deciles, and the ten digits), slides each window over them, judges it every
window/50 images (as often as the server does at most) with the monitor's own PSI (its floor for
empty bins included), and records the largest PSI of any feature. Printed per window: how many
runs crossed 0.25 somewhere, the median and the largest of the runs' peaks, and the peak times
the window (about constant: the peak goes as 1/window).
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np

from benchmarks.arguments import int_list, positive_int
from mnist_pipeline.monitoring import drift

BINS = 10
THRESHOLD = 0.25


def peak_psi(window: int, images: int, rng: np.random.Generator) -> float:
    """The largest PSI of any feature over the judged windows of one stream."""
    features = len(drift.FEATURES)
    bins = rng.integers(0, BINS, size=(images, features))
    onehot = np.zeros((images, features, BINS), np.int32)
    np.put_along_axis(onehot, bins[..., None], 1, axis=2)
    counts = np.cumsum(onehot, axis=0)  # counts[i]: bins of images 0..i
    ends = np.arange(window - 1, images, max(1, window // 50))
    starts = ends - window
    before = np.where((starts >= 0)[:, None, None], counts[np.maximum(starts, 0)], 0)
    shares = (counts[ends] - before) / window
    expected = np.full(BINS, 1 / BINS)
    return max(drift.psi(expected, shares[j, f]) for j in range(len(ends)) for f in range(features))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int_list, default=[100, 150, 200, 300, 500])
    parser.add_argument("--runs", type=positive_int, default=20, help="streams per window")
    parser.add_argument("--images", type=positive_int, default=20_000, help="per stream")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    for window in args.windows:
        if window > args.images:
            parser.error(f"window {window} is longer than a stream of {args.images} images")
        peaks = [peak_psi(window, args.images, rng) for _ in range(args.runs)]
        crossed = sum(peak > THRESHOLD for peak in peaks)
        print(
            f"window {window:>6}: {crossed}/{args.runs} runs over {THRESHOLD}; peak PSI median "
            f"{statistics.median(peaks):.3f}, largest {max(peaks):.3f}; largest x window "
            f"{max(peaks) * window:.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
