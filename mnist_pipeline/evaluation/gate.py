"""The quality gate: the one place a verdict is judged and the one place it is read back.

`evaluate` judges test accuracy (`accuracy_passes`) and records the verdict in metrics.json;
`parity` records its verdict in parity.json. Export and registration never judge again: they read
those recorded verdicts here and refuse a model that did not pass, or a report that was made
from other files than the ones at hand (`made_from`: each report records the SHA-256 of the
weights, ONNX file and dataset it consumed). Torch-free.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from mnist_pipeline.core.errors import GateError, PipelineError


def accuracy_passes(accuracy: float, min_accuracy: float) -> bool:
    """The accuracy gate (`evaluate.min_accuracy`)."""
    return accuracy >= min_accuracy


def enforce_evaluation(report: dict[str, Any]) -> None:
    """GateError (after the report was written) when evaluate's verdict is a failure: test
    accuracy below `evaluate.min_accuracy`, or the extra holdout's below its gate."""
    accuracy, minimum = report["accuracy"], report["min_accuracy"]
    if not accuracy_passes(accuracy, minimum):
        raise GateError(
            f"accuracy {accuracy:.4f} is below the gate evaluate.min_accuracy={minimum}"
        )
    held = report["extra"]
    if not held["passed"]:
        raise GateError(
            f"extra holdout accuracy {held['accuracy']:.4f} ({held['correct']}/{held['total']}) "
            f"is below the gate evaluate.min_extra_accuracy={held['min_extra_accuracy']}"
        )


def parity_passes(
    max_abs_diff_logits: float,
    max_abs_diff_probabilities: float,
    argmax_mismatches: int,
    atol: float,
) -> bool:
    """The parity gate (`parity.atol`): both outputs within atol and the same digit everywhere."""
    return (
        max_abs_diff_logits <= atol
        and max_abs_diff_probabilities <= atol
        and argmax_mismatches == 0
    )


def read_report(path: Path, stage: str) -> dict[str, Any]:
    """A stage's JSON report; a missing or malformed one is an error naming the stage to run."""
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PipelineError(f"no {stage} report at {path}: run `mnist-pipeline {stage}`") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PipelineError(f"cannot read the {stage} report {path}: {exc}") from None
    if not isinstance(report, dict):
        raise PipelineError(f"{path}: expected a JSON object")
    return report


def made_from(
    report: dict[str, Any], key: str, sha256: str, where: str, what: str, rerun: str
) -> None:
    """GateError unless `report[key]` records the file hash `sha256`: a report (or ONNX file)
    made from another file is a stale link of the chain, and `rerun` is the stage that mends it."""
    recorded = report.get(key)
    if recorded != sha256:
        found = "does not record which one" if recorded is None else f"names {str(recorded)[:12]}"
        raise GateError(
            f"{where} was not made from the current {what} (sha256 {sha256[:12]}; it {found}): "
            f"run `mnist-pipeline {rerun}`"
        )


def _number(report: dict[str, Any], key: str, where: str) -> float:
    value = report.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PipelineError(f"{where}: {key!r} must be a finite number, got {value!r}")
    return float(value)


def evaluation_passed(
    metrics: dict[str, Any], where: str, min_accuracy: float | None = None
) -> float:
    """The accuracy of a model whose evaluation passed; GateError when it did not.

    With `min_accuracy` (the gate configured now), a verdict reached under a laxer gate whose
    accuracy falls short of today's is refused too. `where` names the report in messages.
    """
    accuracy = _number(metrics, "accuracy", where)
    held = metrics.get("extra")
    if metrics.get("passed") is not True and isinstance(held, dict) and held.get("passed") is False:
        raise GateError(
            f"{where} says the model did not pass the extra-holdout gate (extra holdout "
            f"accuracy {held.get('accuracy')!r}, min_extra_accuracy "
            f"{held.get('min_extra_accuracy')!r}; MNIST test accuracy {accuracy:.4f})"
        )
    if metrics.get("passed") is not True:
        raise GateError(
            f"{where} says the model did not pass the accuracy gate "
            f"(accuracy {accuracy:.4f}, min_accuracy {metrics.get('min_accuracy')!r})"
        )
    if min_accuracy is not None and not accuracy_passes(accuracy, min_accuracy):
        raise GateError(
            f"{where}: accuracy {accuracy:.4f} is below evaluate.min_accuracy {min_accuracy}"
        )
    return accuracy


def extra_passed(metrics: dict[str, Any], where: str, min_extra_accuracy: float | None) -> None:
    """GateError when the extra-holdout gate configured now (`evaluate.min_extra_accuracy`)
    rejects the accuracy recorded on the extra holdout (no holdout: nothing to judge)."""
    held = metrics.get("extra")
    if min_extra_accuracy is None or not isinstance(held, dict) or not held.get("total"):
        return
    accuracy = _number(held, "accuracy", where)
    if not accuracy_passes(accuracy, min_extra_accuracy):
        raise GateError(
            f"{where}: extra holdout accuracy {accuracy:.4f} is below "
            f"evaluate.min_extra_accuracy {min_extra_accuracy}"
        )


def parity_passed(
    parity: dict[str, Any], onnx_sha256: str, where: str, atol: float | None = None
) -> None:
    """GateError unless `parity` passed for exactly the ONNX file `onnx_sha256`.

    With `atol` (the tolerance configured now), a check made with a looser one is refused too.
    """
    if parity.get("passed") is not True:
        raise GateError(
            f"{where} says the ONNX parity check failed "
            f"(max_abs_diff_logits {parity.get('max_abs_diff_logits')!r}, "
            f"argmax_mismatches {parity.get('argmax_mismatches')!r})"
        )
    made_from(parity, "onnx_sha256", onnx_sha256, where, "model.onnx", "parity")
    checked_with = _number(parity, "atol", where)
    if atol is not None and checked_with > atol:
        raise GateError(
            f"{where}: parity was checked with atol {checked_with}, looser than parity.atol {atol}"
        )
