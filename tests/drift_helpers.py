"""A registered version with a drift reference, measured on the tiny synthetic test set the
tests then send to the server, and those test images as the server's JSON input."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from mnist_pipeline.core.contract import INPUT_NAME, PROBABILITIES
from mnist_pipeline.data.manifest import dataset_sha256
from mnist_pipeline.export.session import open_session
from mnist_pipeline.pipeline.candidate import Candidate
from mnist_pipeline.pipeline.evidence import mnist_test
from tests.registry_helpers import candidate_in, exported_candidate
from tests.reports import evaluated_outputs
from tests.synthetic import make_dataset, write_data_dir


def contract_digits(data_dir: Path) -> np.ndarray:
    """The folder's MNIST test images as float32 [N, 28, 28] in [0, 1] (the ONNX contract)."""
    return mnist_test(data_dir).images.astype(np.float32) / 255.0


def candidate_with_reference(folder: Path, seed: int = 1, n_test: int = 200) -> Candidate:
    """A contract-complete candidate whose evaluate outputs (the predictions CSV that its
    metrics.json records) are its ONNX model's answers on a tiny test set in folder/mnist."""
    exported_candidate(folder, seed)
    data_dir = folder / "mnist"
    write_data_dir(data_dir, make_dataset(n_test=n_test, seed=seed))
    session = open_session((folder / "model.onnx").read_bytes(), threads=1)
    digits = contract_digits(data_dir)
    probabilities = session.run([PROBABILITIES], {INPUT_NAME: digits[:, None]})[0]
    labels = mnist_test(data_dir).labels
    rows = ["index,actual,predicted,confidence"] + [
        f"{i},{label},{int(p.argmax())},{float(p.max()):.6f}"
        for i, (label, p) in enumerate(zip(labels, probabilities, strict=True))
    ]
    predictions = folder / "predictions.csv"
    predictions.write_text("\n".join(rows) + "\n")
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["outputs"] = evaluated_outputs(folder, predictions)
    metrics["dataset_sha256"] = dataset_sha256(data_dir)  # what evaluate would have recorded
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return replace(candidate_in(folder), predictions=predictions, data_dir=data_dir)
