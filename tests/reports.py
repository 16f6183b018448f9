"""Complete reports and cards as the pipeline writes them, for tests that need one without
running the stages (every field the typed models in core/reports.py declare)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from mnist_pipeline.core.params import parse_params
from mnist_pipeline.pipeline.evidence import PREDICTIONS_OUTPUT

MODEL = "mnist-cnn"
# The tiny candidates' accuracies are set by hand; a gate they can pass.
PARAMS = parse_params({"evaluate": {"min_accuracy": 0.9}})


def evaluated_outputs(folder: Path, predictions: Path) -> dict[str, str]:
    """metrics.json's `outputs` for a candidate folder, as evaluate lists them: the predictions
    and every plot, by path under the run folder."""
    written = {PREDICTIONS_OUTPUT: predictions} | {
        f"reports/plots/{plot.name}": plot for plot in sorted((folder / "plots").glob("*.png"))
    }
    return {rel: hashlib.sha256(path.read_bytes()).hexdigest() for rel, path in written.items()}


def metrics_report(accuracy: float = 0.99, **overrides) -> dict:
    """A complete metrics.json as evaluate writes it (fields as reports.Metrics declares)."""
    per_class = {
        str(d): {"precision": 0.9, "recall": 0.9, "f1": 0.9, "support": 10} for d in range(10)
    }
    return {
        "accuracy": accuracy,
        "loss": 0.05,
        "correct": round(accuracy * 100),
        "total": 100,
        "min_accuracy": 0.5,
        "passed": True,
        "per_class": per_class,
        "confusion_matrix": [[0] * 10 for _ in range(10)],
        "extra": {
            "total": 0,
            "holdout_sha256": "e" * 64,
            "extra_sha256": "none",
            "min_extra_accuracy": None,
            "accuracy": None,
            "correct": 0,
            "passed": True,
        },
        "calibration": {"ece": 0.01, "bins": 15, "table": []},
        "robustness": None,
        "dataset_sha256": "d" * 64,
        "state_dict_sha256": "a" * 64,
        "arch": "classic",
    } | overrides


def model_card(**overrides) -> dict:
    """A complete card of a registered version (what reports.ModelCard reads), unsealed."""
    return {
        "schema": 2,
        "name": MODEL,
        "version": 1,
        "created": "2026-12-01T00:00:00+00:00",
        "metrics": {"accuracy": 0.95, "loss": 0.05, "correct": 95, "total": 100},
        "gate": {"min_accuracy": 0.5, "evaluated_min_accuracy": 0.5, "passed": True},
        "parity": {
            key: parity_report()[key]
            for key in ("passed", "max_abs_diff_logits", "max_abs_diff_probabilities")
            + ("argmax_mismatches", "images", "atol", "onnx_sha256")
        },
        "decision": {"alias": "production", "reason": "first version", "champion": None},
        "params": PARAMS.to_dict(),
        "data": {"dataset_sha256": "d" * 64, "extra_sha256": "none"},
        "files": {"model.onnx": "b" * 64},
        "card_sha256": "c" * 64,
    } | overrides


def parity_report(**overrides) -> dict:
    """A complete parity.json as parity writes it (fields as reports.Parity declares)."""
    return {
        "passed": True,
        "max_abs_diff_logits": 1e-6,
        "max_abs_diff_probabilities": 1e-7,
        "max_rel_diff_logits": 1e-6,
        "argmax_mismatches": 0,
        "images": 100,
        "batch_sizes": [1, 7],
        "atol": 1e-4,
        "onnx_sha256": "b" * 64,
        "state_dict_sha256": "a" * 64,
        "onnx_path": "models/model.onnx",
        "per_batch_size": {},
        "reference_evaluator": {},
        "versions": {"onnxruntime": "x"},
    } | overrides
