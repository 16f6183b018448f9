"""Parity of the exported ONNX model with PyTorch on tiny data, and a forced failure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mnist_pipeline.core.errors import DataError, GateError, PipelineError
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.params import ExportParams, ParityParams
from mnist_pipeline.data.manifest import file_sha256
from mnist_pipeline.export import parity as parity_module
from mnist_pipeline.export.export import export_onnx
from mnist_pipeline.export.parity import check_parity
from mnist_pipeline.model.network import build_model
from mnist_pipeline.model.weights import save_state_dict
from tests.example_helpers import reshape_failing_model
from tests.synthetic import make_dataset, write_data_dir

REQUIRED = {
    "passed": bool,
    "max_abs_diff_logits": float,
    "max_abs_diff_probabilities": float,
    "max_rel_diff_logits": float,
    "argmax_mismatches": int,
    "images": int,
    "batch_sizes": list,
    "atol": float,
    "onnx_sha256": str,
    "state_dict_sha256": str,
    "versions": dict,
}


@pytest.fixture
def exported(untrained: Layout) -> Path:
    """The models/ folder of the shared untrained export."""
    return untrained.model_dir


def test_parity_passes_and_reports(exported: Path, tiny_data_dir: Path, tmp_path: Path) -> None:
    report_path = tmp_path / "reports" / "parity.json"
    result = check_parity(
        ParityParams(),
        "classic",
        exported / "model.pt",
        exported / "model.onnx",
        tiny_data_dir,
        report_path,
    )
    report = json.loads(report_path.read_text())
    for key, kind in REQUIRED.items():
        assert isinstance(report[key], kind), key
    assert report["passed"] is True
    assert report["images"] == result.images == 128
    assert report["batch_sizes"] == [128, 1, 7]
    assert set(report["per_batch_size"]) == {"128", "1", "7"}
    assert report["argmax_mismatches"] == 0
    assert report["max_abs_diff_logits"] <= 1e-4 and report["max_abs_diff_probabilities"] <= 1e-4
    assert report["onnx_sha256"] == result.onnx_sha256 == file_sha256(exported / "model.onnx")
    assert report["state_dict_sha256"] == file_sha256(exported / "model.pt")
    assert set(report["versions"]) >= {"onnxruntime", "torch", "onnx"}
    reference = report["reference_evaluator"]
    assert reference["images"] == 16 and reference["max_abs_diff_logits"] <= 1e-4


def test_tampered_weights_fail_after_writing_the_report(
    exported: Path, tiny_data_dir: Path, tmp_path: Path
) -> None:
    torch.manual_seed(1)
    other = tmp_path / "other.pt"
    save_state_dict(build_model("classic"), other)  # not the weights that were exported
    report_path = tmp_path / "parity.json"
    with pytest.raises(GateError, match="ONNX parity failed") as info:
        check_parity(
            ParityParams(), "classic", other, exported / "model.onnx", tiny_data_dir, report_path
        )
    report = json.loads(report_path.read_text())
    assert report["passed"] is False
    assert report["max_abs_diff_logits"] > 1e-4
    assert f"{report['max_abs_diff_logits']:.3g}" in str(info.value)


def test_an_empty_test_split_is_named_before_anything_is_written(
    exported: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    write_data_dir(data, make_dataset(n_test=0))
    with pytest.raises(DataError, match="the test split holds no images, so parity has nothing"):
        check_parity(
            ParityParams(),
            "classic",
            exported / "model.pt",
            exported / "model.onnx",
            data,
            tmp_path / "parity.json",
        )
    assert not (tmp_path / "parity.json").exists()


def test_missing_onnx_is_a_clear_error(exported: Path, tiny_data_dir: Path, tmp_path: Path):
    with pytest.raises(PipelineError, match="run `mnist-pipeline export`"):
        check_parity(
            ParityParams(),
            "classic",
            exported / "model.pt",
            tmp_path / "none.onnx",
            tiny_data_dir,
            tmp_path / "parity.json",
        )
    assert not (tmp_path / "parity.json").exists()


def test_an_onnx_exported_from_other_weights_is_refused_before_comparing(
    exported: Path, tiny_data_dir: Path, tmp_path: Path
) -> None:
    """Our exports record the weights they came from; parity names the stale link."""
    onnx = tmp_path / "model.onnx"
    source = {"state_dict_sha256": file_sha256(exported / "model.pt")}
    export_onnx(ExportParams(), "classic", exported / "model.pt", onnx, source)
    torch.manual_seed(1)
    other = tmp_path / "model.pt"
    save_state_dict(build_model("classic"), other)  # new weights, not exported again
    with pytest.raises(
        GateError,
        match=r"model.onnx was not made from the current model.pt .*"
        r"run `mnist-pipeline export`",
    ):
        check_parity(ParityParams(), "classic", other, onnx, tiny_data_dir, tmp_path / "p.json")
    assert not (tmp_path / "p.json").exists()


def test_the_report_and_its_scores_are_replaced_together_or_not_at_all(
    exported: Path, tiny_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk at the scores file leaves both files of the last check, never a new report
    beside old scores (dvc metrics would show another check than the report)."""
    reports = tmp_path / "reports"
    paths = (reports / "parity.json", reports / "parity_scores.json")
    args = (ParityParams(), "classic", exported / "model.pt", exported / "model.onnx")
    check_parity(*args, tiny_data_dir, *paths)
    before = {path: path.read_bytes() for path in paths}
    real_write = Path.write_bytes

    def full_at_the_scores(self: Path, data: bytes) -> int:
        if self.name.startswith(".parity_scores.json."):
            raise OSError(28, "No space left on device", str(self))
        return real_write(self, data)

    monkeypatch.setattr(Path, "write_bytes", full_at_the_scores)
    with pytest.raises(OSError, match="No space left"):
        check_parity(ParityParams(batch_sizes=[1]), *args[1:], tiny_data_dir, *paths)
    assert {path: path.read_bytes() for path in paths} == before
    assert sorted(p.name for p in reports.iterdir()) == ["parity.json", "parity_scores.json"]


def test_an_image_that_differs_in_every_run_counts_once(
    exported: Path, tiny_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One image whose digit onnxruntime gets wrong at every batch size: argmax_mismatches
    counts images (1), each run's own count stays in per_batch_size, and the failure says 1."""
    from mnist_pipeline.export import parity

    real = parity._ort_outputs

    def flipped(*args):
        logits, probabilities = real(*args)
        logits, probabilities = logits.copy(), probabilities.copy()
        top = logits[0].argmax()
        logits[0, top], logits[0, (top + 1) % 10] = logits[0, (top + 1) % 10], logits[0, top]
        return logits, probabilities

    monkeypatch.setattr(parity, "_ort_outputs", flipped)
    report_path = tmp_path / "parity.json"
    models = (exported / "model.pt", exported / "model.onnx")
    with pytest.raises(GateError, match=r" 1 argmax mismatch\(es\) over 128 images"):
        check_parity(ParityParams(atol=0.01), "classic", *models, tiny_data_dir, report_path)
    report = json.loads(report_path.read_text())
    assert report["argmax_mismatches"] == 1
    assert [run["argmax_mismatches"] for run in report["per_batch_size"].values()] == [1, 1, 1]


def fails_without_a_report(exported: Path, onnx: Path, data_dir: Path, message: str) -> None:
    """Parity of `onnx` against exported/model.pt stops with a PipelineError matching
    `message`, writing no report."""
    report = onnx.parent / "p.json"
    with pytest.raises(PipelineError, match=message):
        check_parity(ParityParams(), "classic", exported / "model.pt", onnx, data_dir, report)
    assert not report.exists()


def test_an_onnx_that_fails_when_run_is_one_error_naming_it(
    exported: Path, tiny_data_dir: Path, tmp_path: Path
) -> None:
    """It loads and has the contract's interface, then onnxruntime fails on the first batch:
    a PipelineError naming the file, not onnxruntime's own exception (a traceback)."""
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(reshape_failing_model())
    fails_without_a_report(exported, onnx, tiny_data_dir, f"onnxruntime failed running {onnx}: ")


def test_an_onnx_the_reference_evaluator_cannot_read_is_one_error_naming_it(
    exported: Path, tiny_data_dir: Path, tmp_path: Path
) -> None:
    """Our export as onnxruntime optimises it (its own com.microsoft FusedGemm operator): it
    loads, runs and keeps the record of its weights, but onnx.reference cannot evaluate it."""
    import onnxruntime as ort

    onnx = tmp_path / "model.onnx"
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(onnx)
    ort.InferenceSession(str(exported / "model.onnx"), options, providers=["CPUExecutionProvider"])
    said = f"onnx.reference cannot evaluate {onnx}: "
    fails_without_a_report(exported, onnx, tiny_data_dir, said)


def refused(exported: Path, data_dir: Path, report: Path) -> dict:
    """The report of a parity check of `exported` that fails the gate."""
    weights, onnx = exported / "model.pt", exported / "model.onnx"
    with pytest.raises(GateError, match="ONNX parity failed"):
        check_parity(ParityParams(), "classic", weights, onnx, data_dir, report)
    return json.loads(report.read_text())


def test_wrong_probabilities_output_fails_parity(
    exported: Path, tiny_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = parity_module._ort_outputs

    def bad_softmax(*args):
        logits, _ = real(*args)
        shifted = np.exp(logits / 2 - (logits / 2).max(1, keepdims=True))
        return logits, shifted / shifted.sum(1, keepdims=True)  # softmax at temperature 2

    monkeypatch.setattr(parity_module, "_ort_outputs", bad_softmax)
    saved = refused(exported, tiny_data_dir, tmp_path / "parity.json")
    assert saved["passed"] is False and saved["max_abs_diff_probabilities"] > 1e-4


def test_reference_evaluator_disagreement_fails_parity(
    exported: Path, tiny_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Off(parity_module.ReferenceEvaluator):
        def run(self, *args, **kwargs):
            logits, probabilities = super().run(*args, **kwargs)
            return [-logits, probabilities]  # another digit for every image

    monkeypatch.setattr(parity_module, "ReferenceEvaluator", Off)
    saved = refused(exported, tiny_data_dir, tmp_path / "parity.json")
    assert saved["passed"] is False and saved["argmax_mismatches"] > 0
