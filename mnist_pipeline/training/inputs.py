"""The train stage's inputs, read whole: the dataset and the ingested labelled digits, read and
hashed under the locks their writers (fetch, ingest) hold, so that the fingerprint a model is
recorded with describes exactly the arrays it was trained on (an `ingest` beside `dvc repro`
cannot swap the files between the read and the hash, or images and labels between two reads).
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from filelock import Timeout

from mnist_pipeline.core.atomic import folder_lock
from mnist_pipeline.core.errors import DataError
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.params import ModelParams, TrainParams
from mnist_pipeline.data.dataset import Mnist, load_mnist
from mnist_pipeline.inbox import extra
from mnist_pipeline.training.fingerprint import training_fingerprint

LOCK_TIMEOUT_S = 600  # a fetch holds its lock while it downloads


@dataclass(frozen=True)
class Inputs:
    mnist: Mnist
    added: extra.Split  # the ingested train split (empty without labelled digits)
    fingerprint: dict[str, Any]


def read_inputs(model: ModelParams, params: TrainParams, layout: Layout) -> Inputs:
    """The dataset, the extra train split and their fingerprint, read while neither changes."""
    with ExitStack() as held:
        for folder in (layout.data_dir, layout.extra_dir):
            lock = folder_lock(folder, LOCK_TIMEOUT_S)
            try:
                held.enter_context(lock)
            except Timeout:
                raise DataError(
                    f"{folder} has been being written for {LOCK_TIMEOUT_S} s ({lock.lock_file} "
                    "is held); try again"
                ) from None
        mnist = load_mnist(layout.data_dir)
        fingerprint = training_fingerprint(model, params, layout.data_dir, layout.extra_dir)
        added = extra.read_split(layout.extra_dir, "train")
    return Inputs(mnist, added, fingerprint)
