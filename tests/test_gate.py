"""The gate: judging accuracy and parity, and reading recorded verdicts back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mnist_pipeline.core.errors import GateError, PipelineError
from mnist_pipeline.core.reports import Metrics, Parity, parse_report, read_report
from mnist_pipeline.evaluation import gate
from tests.reports import metrics_report, parity_report

PASSED = metrics_report(0.99, min_accuracy=0.98)
PARITY = parity_report(onnx_sha256="ab" * 32)


def metrics(**changes) -> Metrics:
    return Metrics.model_validate(PASSED | changes)


def parity(**changes) -> Parity:
    return Parity.model_validate(PARITY | changes)


def test_judging() -> None:
    assert gate.accuracy_passes(0.98, 0.98) and not gate.accuracy_passes(0.9799, 0.98)
    assert gate.parity_passes(1e-4, 1e-5, 0, atol=1e-4)
    assert not gate.parity_passes(2e-4, 1e-5, 0, atol=1e-4)
    assert not gate.parity_passes(1e-5, 2e-4, 0, atol=1e-4)
    assert not gate.parity_passes(1e-5, 1e-5, 1, atol=1e-4)


def test_evaluation_verdict() -> None:
    assert gate.evaluation_passed(metrics(), "m.json") == 0.99
    assert gate.evaluation_passed(metrics(), "m.json", min_accuracy=0.99) == 0.99
    with pytest.raises(GateError, match="m.json says the model did not pass"):
        gate.evaluation_passed(metrics(passed=False), "m.json")
    with pytest.raises(GateError, match="below evaluate.min_accuracy 0.995"):
        gate.evaluation_passed(metrics(), "m.json", min_accuracy=0.995)
    with pytest.raises(PipelineError, match="'accuracy' must be a finite number"):
        gate.evaluation_passed(metrics(accuracy=float("nan")), "m.json")
    for bad in (None, "0.99", True):  # not even a report
        with pytest.raises(PipelineError, match="m.json: field 'accuracy': Input should be"):
            parse_report(Metrics, PASSED | {"accuracy": bad}, "m.json")


def test_parity_verdict() -> None:
    gate.parity_passed(parity(), "ab" * 32, "p.json", atol=1e-4)
    with pytest.raises(GateError, match="parity check failed"):
        gate.parity_passed(parity(passed=False), "ab" * 32, "p.json")
    with pytest.raises(GateError, match="not made from the current model.onnx"):
        gate.parity_passed(parity(), "cd" * 32, "p.json")
    with pytest.raises(GateError, match="looser than parity.atol 1e-05"):
        gate.parity_passed(parity(), "ab" * 32, "p.json", atol=1e-5)


def test_read_report(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match="no report at .*: run `mnist-pipeline evaluate`"):
        read_report(Metrics, tmp_path / "none.json", "evaluate")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(PipelineError, match="bad.json is not readable JSON"):
        read_report(Parity, tmp_path / "bad.json", "parity")
    (tmp_path / "list.json").write_text("[1]")
    with pytest.raises(PipelineError, match=r"list.json: field '\(top level\)'"):
        read_report(Metrics, tmp_path / "list.json", "evaluate")
    (tmp_path / "extra.json").write_text(json.dumps(PASSED | {"bogus": 1}))
    with pytest.raises(PipelineError, match="extra.json: field 'bogus': Extra inputs"):
        read_report(Metrics, tmp_path / "extra.json", "evaluate")
    (tmp_path / "short.json").write_text(
        json.dumps({k: v for k, v in PASSED.items() if k != "arch"})
    )
    with pytest.raises(PipelineError, match="short.json: field 'arch': Field required"):
        read_report(Metrics, tmp_path / "short.json", "evaluate")
    Metrics.model_validate(PASSED).write(tmp_path / "ok.json")
    assert read_report(Metrics, tmp_path / "ok.json", "evaluate") == metrics()
    assert json.loads((tmp_path / "ok.json").read_text()) == PASSED  # the same fields back


def test_a_missed_extra_holdout_gate_is_named_as_such() -> None:
    held = PASSED["extra"] | {"total": 20, "accuracy": 0.5, "passed": False}
    missed = metrics(passed=False, extra=held | {"correct": 10, "min_extra_accuracy": 0.9})
    with pytest.raises(
        GateError, match=r"did not pass the extra-holdout gate .*accuracy 0.5"
    ) as only:
        gate.evaluation_passed(missed, "metrics.json")
    assert "accuracy gate" not in str(only.value)  # MNIST's gate passed: not named
    both = missed.model_copy(update={"accuracy": 0.95, "min_accuracy": 0.98})
    with pytest.raises(GateError, match=r"extra-holdout gate .* nor the accuracy gate \(accuracy "):
        gate.evaluation_passed(both, "metrics.json")


def test_a_report_must_list_files_that_are_there_with_those_bytes() -> None:
    recorded = {"reports/predictions.csv": "a" * 64, "reports/plots/correct.png": "b" * 64}
    gate.outputs_made_with(recorded, dict(recorded), "metrics.json", "evaluate")
    gate.outputs_made_with(None, {}, "metrics.json", "evaluate")  # a report from before lists
    changed = {**recorded, "reports/plots/correct.png": "c" * 64}
    with pytest.raises(GateError, match=r"correct.png has sha256 cccccccccccc but metrics.json"):
        gate.outputs_made_with(recorded, changed, "metrics.json", "evaluate")
    missing = {"reports/predictions.csv": "a" * 64}
    with pytest.raises(GateError, match=r"correct.png is missing .* run `mnist-pipeline evaluate`"):
        gate.outputs_made_with(recorded, missing, "metrics.json", "evaluate")
