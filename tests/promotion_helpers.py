"""Candidates whose per-image answers are set by hand, for the promotion tests.

Every image is one lit pixel (image i: pixel i), and `answering_onnx` builds a contract model
whose weight row i names its answer for image i, so a test decides exactly which images each
model gets right. MNIST test is images 0..TEST-1 (labels i % 10), the extra holdout the rest.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import numpy as np

from mnist_pipeline.data import idx
from mnist_pipeline.data.manifest import MNIST_FILES, dataset_sha256, file_sha256
from mnist_pipeline.inbox import extra
from mnist_pipeline.pipeline.candidate import Candidate
from mnist_pipeline.pipeline.evidence import TEST_FILES
from tests.registry_helpers import candidate_in, make_candidate
from tests.reports import evaluated_outputs, metrics_report, parity_report

PIXELS = 28 * 28
TEST = 700  # MNIST test images (70 per digit); the other 84 pixels are the holdout's
LABELS = np.arange(PIXELS) % 10


def lit(indexes: Iterable[int]) -> np.ndarray:
    """uint8 [N, 28, 28]: image k has only pixel indexes[k] lit."""
    indexes = list(indexes)
    images = np.zeros((len(indexes), PIXELS), np.uint8)
    images[np.arange(len(indexes)), indexes] = 255
    return images.reshape(-1, 28, 28)


def answers(wrong: Iterable[int] = ()) -> np.ndarray:
    """Every image's answer: its label, except the `wrong` ones (label + 1)."""
    given = LABELS.copy()
    for i in wrong:
        given[i] = (LABELS[i] + 1) % 10
    return given


def answering_onnx(path: Path, given: np.ndarray) -> None:
    """A model with the export contract (image -> logits, probabilities) that answers
    given[i] for the image whose pixel i is lit."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = np.zeros((PIXELS, 10), np.float32)
    weight[np.arange(PIXELS), given] = 10.0
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["image"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "W"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "answering",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 10]),
        ],
        initializer=[numpy_helper.from_array(weight, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(path))


def write_test_set(data_dir: Path) -> None:
    """MNIST test's two IDX files: images 0..TEST-1."""
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / TEST_FILES[0]).write_bytes(idx.encode_idx(lit(range(TEST))))
    (data_dir / TEST_FILES[1]).write_bytes(idx.encode_idx(LABELS[:TEST].astype(np.uint8)))


def write_holdout(extra_dir: Path) -> extra.Split:
    """The extra holdout (images TEST..783) and an empty train split, as ingest writes them."""
    split = extra.Split(lit(range(TEST, PIXELS)), LABELS[TEST:].astype(np.uint8))
    extra_dir.mkdir(parents=True, exist_ok=True)
    for name, part in (("holdout", split), ("train", extra.Split.empty())):
        (extra_dir / extra.images_file(name)).write_bytes(idx.encode_idx(part.images))
        (extra_dir / extra.labels_file(name)).write_bytes(idx.encode_idx(part.labels))
    return split


def predictions_csv(given: np.ndarray) -> bytes:
    """evaluate's predictions CSV for these answers on MNIST test."""
    rows = [f"{i},{LABELS[i]},{given[i]},0.900000" for i in range(TEST)]
    return ("index,actual,predicted,confidence\n" + "\n".join(rows) + "\n").encode()


def paired_candidate(
    folder: Path, seed: int, wrong: Iterable[int], data_dir: Path, extra_dir: Path | None = None
) -> Candidate:
    """A complete candidate answering wrong on the `wrong` images (MNIST test and holdout
    indexes), with its predictions CSV recorded in metrics.json."""
    make_candidate(folder, seed)
    given = answers(wrong)
    answering_onnx(folder / "model.onnx", given)
    csv = predictions_csv(given)
    (folder / "predictions.csv").write_bytes(csv)
    correct = int((given[:TEST] == LABELS[:TEST]).sum())
    weights = file_sha256(folder / "model.pt")
    metrics = metrics_report(
        correct / TEST,
        correct=correct,
        total=TEST,
        state_dict_sha256=weights,
        outputs=evaluated_outputs(folder, folder / "predictions.csv"),
    )
    if data_dir is not None and all((data_dir / f.name).is_file() for f in MNIST_FILES):
        metrics["dataset_sha256"] = dataset_sha256(data_dir)  # as evaluate records it
    if extra_dir is not None:
        split = extra.read_split(extra_dir, "holdout")
        right = int((given[TEST:] == LABELS[TEST:]).sum())
        metrics["extra"] |= {
            "total": len(split),
            "correct": right,
            "accuracy": right / len(split),
            "holdout_sha256": extra.split_sha256(split),
        }
    parity = parity_report(
        onnx_sha256=file_sha256(folder / "model.onnx"), state_dict_sha256=weights
    )
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "parity.json").write_text(json.dumps(parity))
    return replace(
        candidate_in(folder),
        predictions=folder / "predictions.csv",
        data_dir=data_dir,
        extra_dir=extra_dir,
    )
