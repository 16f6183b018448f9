"""What the challenger's queue holds and how the shadow thread takes it (challenger.py): a job of
images production answered, a request's reply, and jobs grouped by the challenger they wait for.
"""

from __future__ import annotations

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


def by_challenger(jobs: list[Job]) -> list[list[Job]]:
    """Consecutive jobs queued for the same challenger, in order."""
    groups: list[list[Job]] = []
    for job in jobs:
        if groups and groups[-1][0].challenger is job.challenger:
            groups[-1].append(job)
        else:
            groups.append([job])
    return groups
