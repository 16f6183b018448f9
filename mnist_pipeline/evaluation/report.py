"""The evaluation report as people and DVC read it: the terminal text, the predictions CSV, and
the short scores file (pure functions)."""

from __future__ import annotations

import csv
import io
from typing import Any

import torch

from mnist_pipeline.core.reports import Metrics


def predictions_csv(actual: torch.Tensor, predicted: torch.Tensor, confidence: torch.Tensor) -> str:
    """One row per test image: index,actual,predicted,confidence."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("index", "actual", "predicted", "confidence"))
    rows = zip(actual.tolist(), predicted.tolist(), confidence.tolist(), strict=True)
    for i, (a, p, c) in enumerate(rows):
        writer.writerow((i, a, p, f"{c:.6f}"))
    return out.getvalue()


def headline(report: Metrics) -> dict[str, Any]:
    """The DVC metrics file: a few short columns (metrics.json has the whole report)."""
    robustness = report.robustness
    return {
        "accuracy": report.accuracy,
        "loss": report.loss,
        "passed": report.passed,
        "extra_acc": report.extra.accuracy,
        "ece": round(report.calibration["ece"], 4),
        "robustness": None if robustness is None else round(robustness["overall"], 4),
    }


def report_text(report: Metrics) -> str:
    """The terminal report: the classic test-set line, per-class table, confusion matrix."""
    lines = [
        f"Test set: Average loss: {report.loss:.4f}, Accuracy: {report.correct}/"
        f"{report.total} ({100 * report.accuracy:.2f}%)",
        "",
        "digit  precision  recall      f1  support",
    ]
    for digit, s in report.per_class.items():
        lines.append(
            f"{digit:>5}  {s.precision:9.4f}  {s.recall:6.4f}  {s.f1:6.4f}  {s.support:7d}"
        )
    lines += ["", "confusion matrix (rows: true label, columns: predicted)"]
    lines.append("     " + "".join(f"{k:>6}" for k in range(len(report.confusion_matrix))))
    for k, row in enumerate(report.confusion_matrix):
        lines.append(f"{k:>5}" + "".join(f"{v:>6}" for v in row))
    verdict = "passed" if report.passed else "FAILED"
    lines += ["", f"gate: {verdict} (accuracy {report.accuracy:.4f}, "]
    lines[-1] += f"min_accuracy {report.min_accuracy})"
    quality_line = f"calibration: ECE {report.calibration['ece']:.4f}"
    if report.robustness:
        robust = report.robustness
        quality_line += (
            f"; robustness {robust['overall']:.4f} ("
            + ", ".join(f"{name} {value:.3f}" for name, value in robust["accuracy"].items())
            + f"; {robust['per_transform']} digits each)"
        )
    lines[-1:-1] = [quality_line, ""]
    held = report.extra
    if held.total:
        lines[-1] += (
            f"; extra holdout {held.correct}/{held.total} = {held.accuracy:.4f} "
            f"(min_extra_accuracy {held.min_extra_accuracy})"
        )
    return "\n".join(lines)
