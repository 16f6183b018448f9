"""The gate: judging accuracy and parity, and reading recorded verdicts back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mnist_pipeline.core.errors import GateError, PipelineError
from mnist_pipeline.evaluation import gate

PASSED = {"accuracy": 0.99, "passed": True, "min_accuracy": 0.98}
PARITY = {"passed": True, "onnx_sha256": "ab" * 32, "atol": 1e-4, "max_abs_diff_logits": 1e-6}


def test_judging() -> None:
    assert gate.accuracy_passes(0.98, 0.98) and not gate.accuracy_passes(0.9799, 0.98)
    assert gate.parity_passes(1e-4, 1e-5, 0, atol=1e-4)
    assert not gate.parity_passes(2e-4, 1e-5, 0, atol=1e-4)
    assert not gate.parity_passes(1e-5, 2e-4, 0, atol=1e-4)
    assert not gate.parity_passes(1e-5, 1e-5, 1, atol=1e-4)


def test_evaluation_verdict() -> None:
    assert gate.evaluation_passed(PASSED, "m.json") == 0.99
    assert gate.evaluation_passed(PASSED, "m.json", min_accuracy=0.99) == 0.99
    with pytest.raises(GateError, match="m.json says the model did not pass"):
        gate.evaluation_passed({**PASSED, "passed": False}, "m.json")
    with pytest.raises(GateError, match="below evaluate.min_accuracy 0.995"):
        gate.evaluation_passed(PASSED, "m.json", min_accuracy=0.995)
    for bad in (None, "0.99", True, float("nan")):
        with pytest.raises(PipelineError, match="'accuracy' must be a finite number"):
            gate.evaluation_passed({**PASSED, "accuracy": bad}, "m.json")


def test_parity_verdict() -> None:
    gate.parity_passed(PARITY, "ab" * 32, "p.json", atol=1e-4)
    with pytest.raises(GateError, match="parity check failed"):
        gate.parity_passed({**PARITY, "passed": False}, "ab" * 32, "p.json")
    with pytest.raises(GateError, match="not made from the current model.onnx"):
        gate.parity_passed(PARITY, "cd" * 32, "p.json")
    with pytest.raises(GateError, match="looser than parity.atol 1e-05"):
        gate.parity_passed(PARITY, "ab" * 32, "p.json", atol=1e-5)


def test_read_report(tmp_path: Path) -> None:
    with pytest.raises(
        PipelineError, match="no evaluate report at .*: run `mnist-pipeline evaluate`"
    ):
        gate.read_report(tmp_path / "none.json", "evaluate")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(PipelineError, match="cannot read the parity report"):
        gate.read_report(tmp_path / "bad.json", "parity")
    (tmp_path / "list.json").write_text("[1]")
    with pytest.raises(PipelineError, match="expected a JSON object"):
        gate.read_report(tmp_path / "list.json", "evaluate")
    (tmp_path / "ok.json").write_text(json.dumps(PASSED))
    assert gate.read_report(tmp_path / "ok.json", "evaluate") == PASSED


def test_a_missed_extra_holdout_gate_is_named_as_such() -> None:
    metrics = {
        "accuracy": 0.99,
        "passed": False,
        "min_accuracy": 0.98,
        "extra": {"total": 20, "accuracy": 0.5, "passed": False, "min_extra_accuracy": 0.9},
    }
    with pytest.raises(GateError, match=r"did not pass the extra-holdout gate .*accuracy 0.5"):
        gate.evaluation_passed(metrics, "metrics.json")
