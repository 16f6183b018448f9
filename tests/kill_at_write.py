"""Run the console script in this process and SIGKILL it at its k-th write (no cleanup code
runs after a kill): an atomic file write, once the new bytes are in the temp file and before
the rename, or one rename of a publish (core.atomic.replace_all: files staged in full, moved
into place one by one), just after it ("killed after a publishing rename" on stderr).

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
from mnist_pipeline.evaluation import evaluate

PUBLISHING_RENAME = "killed after a publishing rename"


def run(kill_at: int, argv: list[str]) -> None:
    original, original_replace_all = atomic.atomic_path, atomic.replace_all
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

    def replaced_one_by_one(moves: list[tuple[Path, Path]], removals: list[Path]) -> None:
        nonlocal writes
        for move in moves:
            writes += 1
            original_replace_all([move], [])
            if writes == kill_at:
                print(PUBLISHING_RENAME, file=sys.stderr, flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
        original_replace_all([], removals)

    atomic.atomic_path = killed_at_k
    atomic.replace_all = evaluate.replace_all = replaced_one_by_one  # evaluate imports it
    sys.argv = ["mnist-pipeline", *argv]
    try:
        main()
    finally:
        print(f"atomic writes: {writes}", file=sys.stderr)


if __name__ == "__main__":
    run(int(sys.argv[1]), sys.argv[2:])
