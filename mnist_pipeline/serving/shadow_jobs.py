"""What the challenger's queue holds (challenger.py): a job of images production answered, and
a request's reply; and taking what waits in the queue."""

from __future__ import annotations

import queue
from typing import NamedTuple

import numpy as np

from mnist_pipeline.serving.served_model import Loaded


class Job(NamedTuple):
    """Images production answered, waiting for the challenger."""

    digits: np.ndarray  # float32 [N, 28, 28]
    production: np.ndarray  # production's digits [N]
    keys: list[str]  # SHA-256 of each image's uploaded bytes (none for a JSON batch)
    production_version: int  # the version that answered them
    challenger: Loaded  # the challenger when they were answered (the alias may move meanwhile)


class Reply(NamedTuple):
    """Who answers a request, with what, and production's own probabilities (what the drift
    monitor watches; the same array when production answers)."""

    loaded: Loaded
    probabilities: np.ndarray  # [N, 10]
    production: np.ndarray  # [N, 10]


def version_of(loaded: Loaded | None) -> int | None:
    return None if loaded is None else loaded.version


def waiting_jobs(jobs: queue.SimpleQueue[Job | None]) -> tuple[list[Job], bool]:
    """The jobs waiting in `jobs` now, and whether the stop marker (None) came among them."""
    taken: list[Job] = []
    while True:
        try:
            job = jobs.get_nowait()
        except queue.Empty:
            return taken, False
        if job is None:
            return taken, True
        taken.append(job)
