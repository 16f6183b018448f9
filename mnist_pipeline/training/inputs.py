"""The train stage's inputs, read whole: the dataset and the ingested labelled digits, read and
hashed under the locks their writers (fetch, ingest) hold, so that the fingerprint a model is
recorded with describes exactly the arrays it was trained on (an `ingest` beside `dvc repro`
cannot swap the files between the read and the hash, or images and labels between two reads).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mnist_pipeline.core.atomic import unchanging
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.params import ModelParams, TrainParams
from mnist_pipeline.data.dataset import Mnist, load_mnist
from mnist_pipeline.inbox import extra
from mnist_pipeline.training.fingerprint import training_fingerprint


@dataclass(frozen=True)
class Inputs:
    mnist: Mnist
    added: extra.Split  # the ingested train split (empty without labelled digits)
    fingerprint: dict[str, Any]


def read_inputs(model: ModelParams, params: TrainParams, layout: Layout) -> Inputs:
    """The dataset, the extra train split and their fingerprint, read while neither changes."""
    with unchanging(layout.data_dir, layout.extra_dir):
        mnist = load_mnist(layout.data_dir)
        fingerprint = training_fingerprint(model, params, layout.data_dir, layout.extra_dir)
        added = extra.read_split(layout.extra_dir, "train")
    return Inputs(mnist, added, fingerprint)
