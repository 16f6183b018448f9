"""What `data accept` costs as the inbox grows: the files it hashes and its time.

    python -m benchmarks.bench_accept [--inbox 1000] [--accept 5] [--mnist data/mnist]

Builds a throw-away inbox of `--inbox` MNIST test digits (as PNGs, labelled by their digit),
submits `--accept` more for review, and accepts them in one command, counting the calls of
`file_sha256` (every inbox file accept hashes) and timing it. Accept hashes each inbox file
once for its checks (the image's label there, its place, the same drawing under another label)
and its adds, which list the inbox again and hash only files new or changed since (a
hand-dropped file can have any name).
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.arguments import positive_int
from benchmarks.machine import cpu_name
from mnist_pipeline.data import idx
from mnist_pipeline.inbox import pending
from mnist_pipeline.inbox import store as inbox_store

TEST_IMAGES = "t10k-images-idx3-ubyte"


def png(pixels: np.ndarray) -> bytes:
    """A digit as a user would draw it: dark ink on white."""
    out = io.BytesIO()
    Image.fromarray(255 - pixels).save(out, "PNG")
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inbox", type=positive_int, default=1000, help="images in the inbox")
    parser.add_argument("--accept", type=positive_int, default=5, help="images accepted at once")
    parser.add_argument("--mnist", type=Path, default=Path("data/mnist"), help="MNIST folder")
    args = parser.parse_args()
    digits = idx.parse_images((args.mnist / TEST_IMAGES).read_bytes(), TEST_IMAGES)
    if args.inbox + args.accept > len(digits):
        parser.error(f"--inbox plus --accept must be at most {len(digits)}")
    with tempfile.TemporaryDirectory() as scratch:
        inbox, queue = Path(scratch) / "extra", Path(scratch) / "pending"
        for i in range(args.inbox):
            inbox_store.add(inbox, png(digits[i]), f"{i}.png", i % 10)
        waiting = [
            pending.submit(queue, inbox, png(digits[args.inbox + j]), f"{j}.png", 3, "token:b")
            for j in range(args.accept)
        ]
        hashed = [0]
        real = inbox_store.file_sha256

        def counted(path: Path) -> str:
            hashed[0] += 1
            return real(path)

        inbox_store.file_sha256 = counted
        started = time.perf_counter()
        pending.accept(queue, inbox, [w.sha256 for w in waiting], "bench")
        took = time.perf_counter() - started
        inbox_store.file_sha256 = real
    print(
        f"accept {args.accept} into an inbox of {args.inbox}: {hashed[0]:,} files hashed, "
        f"{took:.2f} s; CPU: {cpu_name()}"
    )


if __name__ == "__main__":
    main()
