"""Run the console script in this process and SIGKILL it at its k-th atomic file write, once
the new bytes are in the temp file and before the rename (no cleanup code runs after a kill).

    python -m tests.kill_at_write K [mnist-pipeline arguments...]

K = 0 kills nothing; either way the number of writes is printed to stderr on a normal exit.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mnist_pipeline.cli.app import main
from mnist_pipeline.core import atomic


def run(kill_at: int, argv: list[str]) -> None:
    original = atomic.atomic_path
    writes = 0

    @contextmanager
    def killed_at_k(target: Path | str, **options: bool) -> Iterator[Path]:
        nonlocal writes
        writes += 1
        index = writes  # files renamed together are all begun before the first is renamed
        with original(target, **options) as tmp:
            yield tmp
            if index == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    atomic.atomic_path = killed_at_k
    sys.argv = ["mnist-pipeline", *argv]
    try:
        main()
    finally:
        print(f"atomic writes: {writes}", file=sys.stderr)


if __name__ == "__main__":
    run(int(sys.argv[1]), sys.argv[2:])
