"""A worker's clone in use: every run holds a shared lock on the folder it runs in for the life
of its process, and a checkout that changes a folder's files needs it exclusively, so no run has
the files it runs changed under it by a run of another commit (checkout.py gives that one a
worktree of its own instead).

flock on a file beside the folder (`.<folder>.in-use`), one open file per folder per process,
inheritable: Prefect's process worker runs the pull step in a process that then execs into the
flow's engine (same process id), and the lock must outlive that exec; it goes when the run's
process ends, however it ends. Exclusive locks are only taken under the worker's pull-step
turns, so turning one back into a shared lock after a checkout lets no other checkout in
between. Where there is no flock (Windows) nothing is held.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TextIO

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

_held: dict[Path, TextIO] = {}  # this process's lock file of each folder it runs in


def _handle(folder: Path) -> TextIO:
    if folder not in _held:
        # kept open for the life of the process: closing it would drop the run's hold
        handle = open(folder.parent / f".{folder.name}.in-use", "a")  # noqa: SIM115
        os.set_inheritable(handle.fileno(), True)
        _held[folder] = handle
    return _held[folder]


def try_hold(folder: Path, exclusive: bool) -> bool:
    """Hold the folder (shared: this run works in it; exclusive: nobody else does); False when
    another process holds it in a way that excludes this. A refused exclusive request can drop
    a shared hold this process had (flock converts by unlocking first)."""
    if fcntl is None:
        return True
    mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    try:
        fcntl.flock(_handle(folder), mode | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def share(folder: Path) -> None:
    """Turn this process's exclusive hold into a shared one (others may run in it again)."""
    if fcntl is not None:
        fcntl.flock(_handle(folder), fcntl.LOCK_SH)


def release(folder: Path) -> None:
    """Give up this process's hold on the folder."""
    if fcntl is not None:
        fcntl.flock(_handle(folder), fcntl.LOCK_UN)
