"""A worker's clone in use: every run holds a shared lock on it for the life of its process, and
a checkout that changes the clone's files needs it exclusively, so no run has the files it runs
changed under it by a run of another commit (which waits for them instead).

flock on a file beside the clone (`.<clone>.in-use`), one open file per clone per process: the
lock goes when the run's process ends, however it ends. The exclusive lock is only ever taken
under the worker's pull-step turns (checkout.py), so turning it back into a shared one after the
checkout cannot let another checkout in between.
"""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import TextIO

_held: dict[Path, TextIO] = {}  # this process's lock file of each clone it runs in


def _handle(clone: Path) -> TextIO:
    if clone not in _held:
        # kept open for the life of the process: closing it would drop the run's hold
        _held[clone] = open(clone.parent / f".{clone.name}.in-use", "a")  # noqa: SIM115
    return _held[clone]


def try_hold(clone: Path, exclusive: bool) -> bool:
    """Hold the clone (shared: this run works in it; exclusive: nobody else does); False when
    another process holds it in a way that excludes this, at once."""
    mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    try:
        fcntl.flock(_handle(clone), mode | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def share(clone: Path) -> None:
    """Turn this process's exclusive hold into a shared one (others may run in it again)."""
    fcntl.flock(_handle(clone), fcntl.LOCK_SH)


def release(clone: Path) -> None:
    """Give up this process's hold on the clone."""
    fcntl.flock(_handle(clone), fcntl.LOCK_UN)
