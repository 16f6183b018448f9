"""A run's inputs fingerprint: what a retraining would learn from, hashed (torch-free).

Two runs with the same fingerprint train the same model (bit for bit on the same machine):
the same dataset content (MNIST and the ingested labelled digits users added), the same params
that shape the weights (`model` and `train`), and the same training code (the modules the
training stage imports). The fingerprint goes into the model card, and a scheduled
retraining whose fingerprint a registered version already has trains and registers nothing.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from mnist_pipeline.core.imports import SOURCE_ROOT, import_closure, sources_sha256
from mnist_pipeline.core.params import ModelParams, Params, TrainParams
from mnist_pipeline.data.manifest import dataset_sha256
from mnist_pipeline.inbox.extra import NO_EXTRA_SHA256, extra_sha256

SECTIONS = ("model", "train")  # the params that shape the weights
TRAIN_MODULE = "mnist_pipeline.training.train"  # the train stage's entry (pipeline/stages.py)


def code_sha256(source_root: Path = SOURCE_ROOT) -> str:
    """SHA-256 over the sources the training stage imports (its import closure, core/imports.py:
    the same files dvc.yaml lists as the train stage's code deps).

    Unlike a git commit it is defined without git and sees uncommitted edits; modules training
    does not import (serving, the registry, the CLI), README, tests and flows do not change it.
    """
    return sources_sha256(import_closure(TRAIN_MODULE, source_root), source_root)


def inputs_fingerprint(
    params: Params, data_dir: Path, extra_dir: Path | None = None
) -> dict[str, Any]:
    """The fingerprint of training with `params` on the dataset in `data_dir` (and the ingested
    extra data in `extra_dir`, if any)."""
    return training_fingerprint(params.model, params.train, data_dir, extra_dir)


def training_fingerprint(
    model: ModelParams, train: TrainParams, data_dir: Path, extra_dir: Path | None = None
) -> dict[str, Any]:
    """{"sha256": ..., "dataset_sha256": ..., "extra_sha256": ..., "code_sha256": ...,
    "params": {"model": ..., "train": ...}} where "sha256" hashes the others (canonical JSON)."""
    sections = {"model": model, "train": train}
    inputs = {
        "dataset_sha256": dataset_sha256(data_dir),
        "extra_sha256": NO_EXTRA_SHA256 if extra_dir is None else extra_sha256(extra_dir),
        "code_sha256": code_sha256(),
        "params": {name: sections[name].model_dump(mode="json") for name in SECTIONS},
    }
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":"))
    return {"sha256": hashlib.sha256(canonical.encode()).hexdigest(), **inputs}
