"""Evaluate stage: score the trained weights on the 10k test set, write reports, apply the gate.

Also reports calibration (ECE, reliability diagram) and robustness (accuracy on test digits drawn
like real photos, per transformation; quality.py), and scores the extra holdout (the share of the
labelled digits users added that training never saw; extra.py), per class, with a plot of its
mistakes. Writes layout.metrics (JSON), layout.predictions (CSV:
index,actual,predicted,confidence) and the PNG plots, prints the report, and only then raises
GateError when accuracy < min_accuracy (or, when set, the extra holdout's accuracy <
min_extra_accuracy).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mnist_pipeline.core.atomic import write_json, write_text
from mnist_pipeline.core.errors import GateError
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.params import EvaluateParams, ModelParams
from mnist_pipeline.data.dataset import load_mnist, normalise
from mnist_pipeline.data.manifest import dataset_sha256, file_sha256
from mnist_pipeline.evaluation import metrics, plots, quality
from mnist_pipeline.evaluation.gate import accuracy_passes
from mnist_pipeline.inbox import extra
from mnist_pipeline.model.network import predict_logits
from mnist_pipeline.model.weights import load_model

SCORES = ("accuracy", "loss", "passed")  # `dvc metrics show`: one short row (metrics.json: all)
PLOT_FILES = ("misclassified.png", "correct.png", "confusion_matrix.png", "training_curves.png")
EXTRA_PLOT = "extra_misclassified.png"  # the extra holdout's mistakes (only with a holdout)


@dataclass(frozen=True)
class EvalResult:
    """Test-set scores of a model that passed the gate (the full report is layout.metrics)."""

    accuracy: float
    loss: float
    correct: int
    total: int
    min_accuracy: float
    per_class: dict[str, dict[str, float | int]]
    metrics_path: Path

    def summary(self) -> str:
        return (
            f"accuracy {self.correct}/{self.total} = {self.accuracy:.4f} passed the gate "
            f"(min_accuracy {self.min_accuracy}); metrics in {self.metrics_path}"
        )


def predictions_csv(actual: torch.Tensor, predicted: torch.Tensor, confidence: torch.Tensor) -> str:
    """One row per test image: index,actual,predicted,confidence."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("index", "actual", "predicted", "confidence"))
    rows = zip(actual.tolist(), predicted.tolist(), confidence.tolist(), strict=True)
    for i, (a, p, c) in enumerate(rows):
        writer.writerow((i, a, p, f"{c:.6f}"))
    return out.getvalue()


def report_text(report: dict[str, Any]) -> str:
    """The terminal report: the classic test-set line, per-class table, confusion matrix."""
    lines = [
        f"Test set: Average loss: {report['loss']:.4f}, Accuracy: {report['correct']}/"
        f"{report['total']} ({100 * report['accuracy']:.2f}%)",
        "",
        "digit  precision  recall      f1  support",
    ]
    for digit, s in report["per_class"].items():
        lines.append(
            f"{digit:>5}  {s['precision']:9.4f}  {s['recall']:6.4f}  {s['f1']:6.4f}  "
            f"{s['support']:7d}"
        )
    lines += ["", "confusion matrix (rows: true label, columns: predicted)"]
    lines.append("     " + "".join(f"{k:>6}" for k in range(len(report["confusion_matrix"]))))
    for k, row in enumerate(report["confusion_matrix"]):
        lines.append(f"{k:>5}" + "".join(f"{v:>6}" for v in row))
    verdict = "passed" if report["passed"] else "FAILED"
    lines += ["", f"gate: {verdict} (accuracy {report['accuracy']:.4f}, "]
    lines[-1] += f"min_accuracy {report['min_accuracy']})"
    quality_line = f"calibration: ECE {report['calibration']['ece']:.4f}"
    if report["robustness"]:
        robust = report["robustness"]
        quality_line += (
            f"; robustness {robust['overall']:.4f} ("
            + ", ".join(f"{name} {value:.3f}" for name, value in robust["accuracy"].items())
            + f"; {robust['per_transform']} digits each)"
        )
    lines[-1:-1] = [quality_line, ""]
    held = report["extra"]
    if held["total"]:
        lines[-1] += (
            f"; extra holdout {held['correct']}/{held['total']} = {held['accuracy']:.4f} "
            f"(min_extra_accuracy {held['min_extra_accuracy']})"
        )
    return "\n".join(lines)


def score_holdout(net: torch.nn.Module, params: EvaluateParams, layout: Layout) -> dict[str, Any]:
    """The extra holdout's report (total 0 without one); its mistakes go to EXTRA_PLOT."""
    holdout = extra.read_split(layout.extra_dir, "holdout")
    held: dict[str, Any] = {
        "total": len(holdout),
        "holdout_sha256": extra.split_sha256(holdout),
        "extra_sha256": extra.extra_sha256(layout.extra_dir),
        "min_extra_accuracy": params.min_extra_accuracy,
    }
    plot = layout.plots / EXTRA_PLOT
    if not len(holdout):
        plot.unlink(missing_ok=True)  # never leave a stale one behind
        return {**held, "accuracy": None, "correct": 0, "passed": True}
    images = torch.from_numpy(holdout.images)
    actual = torch.from_numpy(holdout.labels).long()
    logits = predict_logits(net, normalise(images), params.batch_size)
    confidence, predicted = torch.softmax(logits, dim=1).max(dim=1)
    matrix = metrics.confusion_matrix(actual, predicted)
    accuracy = metrics.accuracy(matrix)
    minimum = params.min_extra_accuracy
    plots.plot_misclassified(images, actual, predicted, confidence, plot, what="extra holdout")
    return {
        **held,
        "accuracy": accuracy,
        "correct": int(matrix.trace()),
        "passed": minimum is None or accuracy_passes(accuracy, minimum),
        "per_class": metrics.per_class(matrix),
    }


def write_plots(
    images: torch.Tensor,
    actual: torch.Tensor,
    predicted: torch.Tensor,
    confidence: torch.Tensor,
    matrix: torch.Tensor,
    layout: Layout,
) -> None:
    """Every evaluation plot into layout.plots (training curves only when a history exists)."""
    folder = layout.plots
    plots.plot_misclassified(images, actual, predicted, confidence, folder / PLOT_FILES[0])
    plots.plot_correct(images, actual, predicted, confidence, folder / PLOT_FILES[1])
    plots.plot_confusion(matrix, folder / PLOT_FILES[2])
    if not plots.plot_training_curves(layout.train_history, folder / PLOT_FILES[3]):
        (folder / PLOT_FILES[3]).unlink(missing_ok=True)  # never leave a stale one behind


def evaluate(model: ModelParams, params: EvaluateParams, layout: Layout) -> EvalResult:
    """Score layout.state_dict on the test set; raise GateError below params.min_accuracy."""
    net = load_model(model.arch, layout.state_dict)  # a clear error if there are none
    weights_sha256 = file_sha256(layout.state_dict)  # the weights this report describes
    mnist = load_mnist(layout.data_dir)
    actual = mnist.test_labels
    logits = predict_logits(net, normalise(mnist.test_images), params.batch_size)
    confidence, predicted = torch.softmax(logits, dim=1).max(dim=1)
    matrix = metrics.confusion_matrix(actual, predicted)
    accuracy = metrics.accuracy(matrix)
    held = score_holdout(net, params, layout)
    passed = accuracy_passes(accuracy, params.min_accuracy) and held["passed"]
    calibration = metrics.calibration(confidence, predicted == actual)
    robustness = quality.robustness_report(
        net, mnist.test_images, actual, params.robustness_per_transform, params.batch_size
    )
    report = {
        "accuracy": accuracy,
        "loss": metrics.score(logits, actual).loss if len(actual) else 0.0,
        "correct": int(matrix.trace()),
        "total": len(actual),
        "min_accuracy": params.min_accuracy,
        "passed": passed,
        "per_class": metrics.per_class(matrix),
        "confusion_matrix": matrix.tolist(),
        "extra": held,
        "calibration": calibration,
        "robustness": robustness,
        "dataset_sha256": dataset_sha256(layout.data_dir),
        "state_dict_sha256": weights_sha256,
        "arch": model.arch,
    }
    write_text(layout.predictions, predictions_csv(actual, predicted, confidence))
    write_plots(mnist.test_images, actual, predicted, confidence, matrix, layout)
    quality.write_plots(calibration, robustness, layout.plots)
    write_json(layout.metrics, report)
    scores = {key: report[key] for key in SCORES}
    headline = {
        "extra_acc": held["accuracy"],
        "ece": round(calibration["ece"], 4),  # short columns in `dvc metrics show`
        "robustness": None if robustness is None else round(robustness["overall"], 4),
    }
    write_json(layout.scores, {**scores, **headline})
    print(report_text(report), flush=True)
    if not accuracy_passes(accuracy, params.min_accuracy):
        raise GateError(
            f"accuracy {accuracy:.4f} is below the gate evaluate.min_accuracy={params.min_accuracy}"
        )
    if not held["passed"]:
        raise GateError(
            f"extra holdout accuracy {held['accuracy']:.4f} ({held['correct']}/{held['total']}) "
            f"is below the gate evaluate.min_extra_accuracy={params.min_extra_accuracy}"
        )
    return EvalResult(
        accuracy=accuracy,
        loss=report["loss"],
        correct=report["correct"],
        total=report["total"],
        min_accuracy=params.min_accuracy,
        per_class=report["per_class"],
        metrics_path=layout.metrics,
    )
