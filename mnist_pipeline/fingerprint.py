"""A run's inputs fingerprint: what a retraining would learn from, hashed (torch-free).

Two runs with the same fingerprint train the same model (bit for bit on the same machine):
the same dataset content (MNIST and the ingested labelled digits users added), the same params
that shape the weights (`model` and `train`), and the same package source code. The fingerprint
goes into the model card, and a scheduled retraining whose fingerprint a registered version
already has trains and registers nothing.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import mnist_pipeline
from mnist_pipeline.extra import NO_EXTRA_SHA256, extra_sha256
from mnist_pipeline.manifest import dataset_sha256
from mnist_pipeline.params import ModelParams, Params, TrainParams

SECTIONS = ("model", "train")  # the params that shape the weights
PACKAGE_DIR = Path(mnist_pipeline.__file__).resolve().parent


def code_sha256(package_dir: Path = PACKAGE_DIR) -> str:
    """SHA-256 over the package's Python sources (relative path and content of each file).

    Unlike a git commit it is defined without git and sees uncommitted edits; files outside the
    package (README, tests, flows) do not change it.
    """
    digest = hashlib.sha256()
    for path in sorted(package_dir.rglob("*.py")):
        digest.update(path.relative_to(package_dir).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


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
