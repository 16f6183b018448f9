"""A benchmark's scratch folder, removed however the benchmark ends."""

from __future__ import annotations

import shutil
import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType


def _stopped(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds, so `finally` blocks run


@contextmanager
def scratch_folder(prefix: str) -> Iterator[Path]:
    """A new temp folder, removed when the block ends: also when the benchmark is stopped by
    SIGTERM (`timeout`, a cancelled job), whose default action ends the process at once and
    left runs of a hundred MB behind."""
    previous = signal.signal(signal.SIGTERM, _stopped)
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        signal.signal(signal.SIGTERM, previous)


def clean_up_on_sigterm() -> None:
    """From now on SIGTERM unwinds the benchmark (SystemExit), so its `finally` blocks remove
    its scratch folder and stop its servers (for the scripts that keep their own)."""
    signal.signal(signal.SIGTERM, _stopped)
