"""The quality gate: the one place a verdict is judged and the one place it is read back.

`evaluate` judges test accuracy (`accuracy_passes`) and records the verdict in metrics.json;
`parity` records its verdict in parity.json. Export and registration read those recorded
verdicts here, hold the recorded accuracies to the gates params set now (a gate raised since),
and refuse a model that did not pass, or a report that was made from other files than the ones
at hand (`made_from`: each report records the SHA-256 of the
weights, ONNX file and dataset it consumed). Torch-free.
"""

from __future__ import annotations

import math

from mnist_pipeline.core.errors import GateError, PipelineError
from mnist_pipeline.core.reports import Metrics, Parity


def accuracy_passes(accuracy: float, min_accuracy: float) -> bool:
    """The accuracy gate (`evaluate.min_accuracy`)."""
    return accuracy >= min_accuracy


def enforce_evaluation(report: Metrics) -> None:
    """GateError (after the report was written) when evaluate's verdict is a failure: test
    accuracy below `evaluate.min_accuracy`, or the extra holdout's below its gate."""
    if not accuracy_passes(report.accuracy, report.min_accuracy):
        raise GateError(
            f"accuracy {report.accuracy:.4f} is below the gate "
            f"evaluate.min_accuracy={report.min_accuracy}"
        )
    held = report.extra
    if not held.passed:
        raise GateError(
            f"extra holdout accuracy {held.accuracy:.4f} ({held.correct}/{held.total}) "
            f"is below the gate evaluate.min_extra_accuracy={held.min_extra_accuracy}"
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


def made_from(recorded: str | None, sha256: str, where: str, what: str, rerun: str) -> None:
    """GateError unless a report (or ONNX file) at `where` records the file hash `sha256` of
    `what`: one made from another file is a stale link of the chain, and `rerun` is the stage
    that mends it."""
    if recorded != sha256:
        found = "does not record which one" if recorded is None else f"names {str(recorded)[:12]}"
        raise GateError(
            f"{where} was not made from the current {what} (sha256 {sha256[:12]}; it {found}): "
            f"run `mnist-pipeline {rerun}`"
        )


def outputs_made_with(
    recorded: dict[str, str] | None, found: dict[str, str | None], where: str, rerun: str
) -> None:
    """GateError unless every file a report lists (`recorded`: path -> SHA-256) is there with
    those bytes (`found`: path -> SHA-256 now, None when missing): a stage whose last write (the
    report) came from another run than some of its other files did not finish."""
    for path, sha256 in (recorded or {}).items():
        now = found.get(path)
        if now != sha256:
            state = "is missing" if now is None else f"has sha256 {now[:12]}"
            raise GateError(
                f"{path} {state} but {where} records {sha256[:12]}: the last `{rerun}` did not "
                f"finish every write (or the file changed since): run `mnist-pipeline {rerun}`"
            )


def _finite(value: float | None, key: str, where: str) -> float:
    if value is None or not math.isfinite(value):
        raise PipelineError(f"{where}: {key!r} must be a finite number, got {value!r}")
    return float(value)


def evaluation_passed(metrics: Metrics, where: str, min_accuracy: float | None = None) -> float:
    """The accuracy of a model whose evaluation passed; GateError when it did not.

    With `min_accuracy` (the gate configured now), a verdict reached under a laxer gate whose
    accuracy falls short of today's is refused too. `where` names the report in messages.
    """
    accuracy = _finite(metrics.accuracy, "accuracy", where)
    held = metrics.extra
    mnist_gate = (
        f"the accuracy gate (accuracy {accuracy:.4f}, min_accuracy {metrics.min_accuracy!r})"
    )
    if not metrics.passed and not held.passed:
        missed = (
            f"the extra-holdout gate (extra holdout accuracy {held.accuracy!r}, "
            f"min_extra_accuracy {held.min_extra_accuracy!r}; MNIST test accuracy {accuracy:.4f})"
        )
        if not accuracy_passes(accuracy, metrics.min_accuracy):  # both: name both
            missed += f" nor {mnist_gate}"
        raise GateError(f"{where} says the model did not pass {missed}")
    if not metrics.passed:
        raise GateError(f"{where} says the model did not pass {mnist_gate}")
    if min_accuracy is not None and not accuracy_passes(accuracy, min_accuracy):
        raise GateError(
            f"{where}: accuracy {accuracy:.4f} is below evaluate.min_accuracy {min_accuracy}"
        )
    return accuracy


def extra_passed(metrics: Metrics, where: str, min_extra_accuracy: float | None) -> None:
    """GateError when the extra-holdout gate configured now (`evaluate.min_extra_accuracy`)
    rejects the accuracy recorded on the extra holdout (no holdout: nothing to judge)."""
    held = metrics.extra
    if min_extra_accuracy is None or not held.total:
        return
    accuracy = _finite(held.accuracy, "extra.accuracy", where)
    if not accuracy_passes(accuracy, min_extra_accuracy):
        raise GateError(
            f"{where}: extra holdout accuracy {accuracy:.4f} is below "
            f"evaluate.min_extra_accuracy {min_extra_accuracy}"
        )


def parity_passed(parity: Parity, onnx_sha256: str, where: str, atol: float | None = None) -> None:
    """GateError unless `parity` passed for exactly the ONNX file `onnx_sha256`.

    With `atol` (the tolerance configured now), a check made with a looser one is refused too.
    """
    if not parity.passed:
        raise GateError(
            f"{where} says the ONNX parity check failed "
            f"(max_abs_diff_logits {parity.max_abs_diff_logits!r}, "
            f"argmax_mismatches {parity.argmax_mismatches!r})"
        )
    made_from(parity.onnx_sha256, onnx_sha256, where, "model.onnx", "parity")
    checked_with = _finite(parity.atol, "atol", where)
    if atol is not None and checked_with > atol:
        raise GateError(
            f"{where}: parity was checked with atol {checked_with}, looser than parity.atol {atol}"
        )
