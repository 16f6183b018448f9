"""ONNX export of an untrained ClassicNet: interface, graph, checker, metadata, atomicity."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import mnist_pipeline
from mnist_pipeline.core.contract import MNIST_MEAN, MNIST_STD
from mnist_pipeline.core.errors import GateError, PipelineError
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.params import EvaluateParams, ExportParams, ModelParams
from mnist_pipeline.data.manifest import dataset_sha256, file_sha256
from mnist_pipeline.evaluation import gate
from mnist_pipeline.export import export as export_module
from mnist_pipeline.export.export import collect_metadata, export, export_onnx
from mnist_pipeline.export.session import open_session
from mnist_pipeline.model.network import build_model
from mnist_pipeline.model.weights import load_model
from mnist_pipeline.serving import predict
from tests.conftest import UNTRAINED_META
from tests.reports import metrics_report

MODEL = ModelParams()
GATES = EvaluateParams(min_accuracy=0.98)  # as metrics.json records it


@pytest.fixture
def exported(untrained: Layout) -> Path:
    """The models/ folder of the shared untrained export (caller metadata UNTRAINED_META)."""
    return untrained.model_dir


def test_one_self_contained_file(exported: Path) -> None:
    assert sorted(p.name for p in exported.iterdir()) == ["model.onnx", "model.pt"]
    proto = onnx.load(str(exported / "model.onnx"), load_external_data=False)
    assert not any(onnx.external_data_helper.uses_external_data(t) for t in proto.graph.initializer)


def test_graph_interface_and_no_dropout(exported) -> None:
    proto = onnx.load(str(exported / "model.onnx"))
    ops = {node.op_type for node in proto.graph.node}
    assert "Dropout" not in ops and {"Conv", "Softmax"} <= ops
    assert [i.name for i in proto.graph.input] == ["image"] == [predict.INPUT_NAME]
    assert [o.name for o in proto.graph.output] == ["logits", "probabilities"]
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [1, 28, 28]
    assert {o.domain: o.version for o in proto.opset_import}[""] == 18


def test_checker_full_check_passes(exported) -> None:
    onnx.checker.check_model(str(exported / "model.onnx"), full_check=True)


def test_metadata_is_readable_with_onnxruntime(exported) -> None:
    session = ort.InferenceSession(str(exported / "model.onnx"))
    meta = session.get_modelmeta().custom_metadata_map
    for key, value in UNTRAINED_META.items():
        assert meta[key] == value
    assert json.loads(meta["class_labels"]) == [str(d) for d in range(10)]
    norm = json.loads(meta["normalisation"])
    assert (norm["mean"], norm["std"], norm["inside_graph"]) == (MNIST_MEAN, MNIST_STD, True)
    assert "[N, 1, 28, 28]" in meta["input"] and "[0, 1]" in meta["input"]
    assert meta["producer_torch"] == torch.__version__
    assert meta["producer_onnx"] == onnx.__version__
    assert meta["producer_mnist_pipeline"] == mnist_pipeline.__version__
    assert meta["opset"] == "18" and meta["arch"] == "classic"


@pytest.mark.parametrize("n", [1, 3, 64])
def test_dynamic_batch_matches_torch_with_normalisation_inside(exported, n: int) -> None:
    session = ort.InferenceSession(str(exported / "model.onnx"))
    pixels = np.random.default_rng(n).uniform(0, 1, (n, 1, 28, 28)).astype(np.float32)
    logits, probs = session.run(["logits", "probabilities"], {"image": pixels})
    assert logits.shape == probs.shape == (n, 10)
    with torch.inference_mode():
        expected = load_model("classic", exported / "model.pt")(
            (torch.from_numpy(pixels) - MNIST_MEAN) / MNIST_STD
        )
    np.testing.assert_allclose(logits, expected.numpy(), atol=1e-5)
    np.testing.assert_allclose(probs, torch.softmax(expected, 1).numpy(), atol=1e-6)


def test_opset_17(exported: Path, tmp_path: Path) -> None:
    result = export_onnx(
        ExportParams(opset=17), "classic", exported / "model.pt", tmp_path / "m.onnx", {}
    )
    assert result.onnx_path == tmp_path / "m.onnx" and result.opset == 17
    assert result.sha256 == file_sha256(result.onnx_path)
    assert result.size_bytes == result.onnx_path.stat().st_size
    proto = onnx.load(str(result.onnx_path))
    assert {o.domain: o.version for o in proto.opset_import}[""] == 17
    session = ort.InferenceSession(str(result.onnx_path))
    assert session.get_modelmeta().custom_metadata_map["opset"] == "17"
    assert session.run(None, {"image": np.zeros((2, 1, 28, 28), np.float32)})[0].shape == (2, 10)


def test_failed_check_leaves_the_existing_file(exported: Path, tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "model.onnx"
    target.write_bytes(b"previous model")

    def reject(*_args, **_kwargs):
        raise onnx.checker.ValidationError("broken on purpose")

    monkeypatch.setattr(onnx.checker, "check_model", reject)
    with pytest.raises(PipelineError, match="broken on purpose"):
        export_onnx(ExportParams(), "classic", exported / "model.pt", target, {})
    assert target.read_bytes() == b"previous model"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_caller_cannot_override_builtin_metadata(exported, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="class_labels"):
        export_onnx(
            ExportParams(), "classic", exported / "model.pt", tmp_path / "m.onnx",
            {"class_labels": "[]"},
        )  # fmt: skip
    assert not (tmp_path / "m.onnx").exists()


def test_a_folder_whose_name_is_not_utf8_exports_and_loads(exported, tmp_path: Path) -> None:
    """onnx's checker and onnxruntime take only paths they can encode as UTF-8 (a TypeError
    and a signature dump otherwise): the file is checked and loaded from its bytes."""
    folder = tmp_path / os.fsdecode(b"pr\xffoj")  # a byte no UTF-8 name holds
    folder.mkdir()
    result = export_onnx(ExportParams(), "classic", exported / "model.pt", folder / "m.onnx", {})
    assert result.sha256 == file_sha256(folder / "m.onnx")
    assert result.size_bytes == (folder / "m.onnx").stat().st_size
    probabilities = open_session(folder / "m.onnx").run(
        ["probabilities"], {"image": np.zeros((1, 1, 28, 28), np.float32)}
    )[0]
    assert probabilities.shape == (1, 10)
    with pytest.raises(PipelineError, match=r"cannot read .*none\.onnx: No such file"):
        open_session(folder / "none.onnx")


def test_missing_weights_are_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match="no trained weights"):
        export_onnx(ExportParams(), "classic", tmp_path / "none.pt", tmp_path / "m.onnx", {})


# ---- the stage: only a model whose evaluation passed, on this dataset, is exported


def test_collect_metadata_only_collects() -> None:
    meta = collect_metadata(0.991, "cd" * 32, "ab" * 32, model_version="3")
    assert meta == {
        "training_data_sha256": "cd" * 32,
        "state_dict_sha256": "ab" * 32,
        "test_accuracy": "0.991",
        "model_version": "3",
    }
    assert "model_version" not in collect_metadata(0.991, "cd" * 32, "ab" * 32)


@pytest.fixture
def candidate(tmp_path: Path, tiny_data_dir: Path, untrained: Layout) -> Layout:
    """A layout with the tiny dataset and (untrained) weights, ready for export but for metrics."""
    layout = Layout(tmp_path)
    layout.model_dir.mkdir()
    shutil.copy(untrained.state_dict, layout.state_dict)
    return layout


def _metrics(layout: Layout, **fields) -> None:
    report = metrics_report(
        0.991,
        min_accuracy=0.98,
        dataset_sha256=dataset_sha256(layout.data_dir),
        state_dict_sha256=file_sha256(layout.state_dict),
    )
    layout.reports.mkdir(exist_ok=True)
    layout.metrics.write_text(json.dumps(report | fields))


def test_stage_records_the_evaluated_accuracy_and_dataset(candidate: Layout) -> None:
    _metrics(candidate)
    result = export(MODEL, ExportParams(), GATES, candidate, model_version="3")
    meta = ort.InferenceSession(str(result.onnx_path)).get_modelmeta().custom_metadata_map
    assert result.onnx_path == candidate.onnx
    assert meta["test_accuracy"] == "0.991" and meta["model_version"] == "3"
    assert meta["training_data_sha256"] == dataset_sha256(candidate.data_dir)
    assert meta["state_dict_sha256"] == file_sha256(candidate.state_dict)


def test_stage_exports_the_weights_it_checked_if_model_pt_is_replaced_meanwhile(
    candidate: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hash the gates compare and the weights exported come from one read of model.pt: a
    training that replaces it meanwhile does not get its weights labelled with the old hash."""
    _metrics(candidate)
    checked = load_model("classic", candidate.state_dict)
    before = file_sha256(candidate.state_dict)
    passed = gate.evaluation_passed

    def replaced_meanwhile(*args, **kwargs):
        torch.manual_seed(7)  # other classic weights, as a new training would write
        torch.save(build_model("classic").state_dict(), candidate.state_dict)
        return passed(*args, **kwargs)

    monkeypatch.setattr(gate, "evaluation_passed", replaced_meanwhile)
    export(MODEL, ExportParams(), GATES, candidate)
    assert file_sha256(candidate.state_dict) != before  # replaced while export ran
    proto = onnx.load(str(candidate.onnx))
    exported = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    conv1 = checked.state_dict()["conv1.weight"].numpy()
    assert any(w.shape == conv1.shape and np.array_equal(w, conv1) for w in exported.values())


def test_stage_refuses_a_model_that_failed_the_gate(candidate: Layout) -> None:
    _metrics(candidate, accuracy=0.5, passed=False)
    with pytest.raises(GateError, match="refusing to export: .*did not pass the accuracy gate"):
        export(MODEL, ExportParams(), GATES, candidate)
    assert not candidate.onnx.exists()


def test_stage_refuses_a_model_below_the_gates_set_since_evaluate(candidate: Layout) -> None:
    """Evaluated at min_accuracy 0.98 (passed at 0.991), then the gate raised in params.yaml:
    export refuses, as registration does (before: exported, and `predict` used the file)."""
    _metrics(candidate)
    raised = EvaluateParams(min_accuracy=0.995)
    with pytest.raises(GateError, match="refusing to export: .*below evaluate.min_accuracy 0.995"):
        export(MODEL, ExportParams(), raised, candidate)
    held = {"total": 10, "correct": 5, "accuracy": 0.5, "min_extra_accuracy": None}
    _metrics(candidate, extra=metrics_report()["extra"] | held)
    raised = EvaluateParams(min_accuracy=0.98, min_extra_accuracy=0.9)
    with pytest.raises(GateError, match="extra holdout accuracy 0.5000 is below .*0.9"):
        export(MODEL, ExportParams(), raised, candidate)
    assert not candidate.onnx.exists()


def test_stage_refuses_a_model_evaluated_before_an_ingest(candidate: Layout) -> None:
    """Evaluated with no labelled digits, then `ingest` made a holdout it was never judged on:
    refused until evaluate runs again (as registration refuses it)."""
    from tests.promotion_helpers import write_holdout

    _metrics(candidate)
    write_holdout(candidate.extra_dir)
    message = r"not made from the current ingested digits .*: run `mnist-pipeline evaluate`"
    with pytest.raises(GateError, match=message):
        export(MODEL, ExportParams(), GATES, candidate)
    assert not candidate.onnx.exists()


def test_stage_refuses_missing_or_stale_metrics(candidate: Layout) -> None:
    with pytest.raises(PipelineError, match="run `mnist-pipeline evaluate`"):
        export(MODEL, ExportParams(), GATES, candidate)
    _metrics(candidate, dataset_sha256="0" * 64)
    with pytest.raises(GateError, match="not made from the current dataset"):
        export(MODEL, ExportParams(), GATES, candidate)
    assert not candidate.onnx.exists()


def test_stage_refuses_metrics_of_other_weights(candidate: Layout) -> None:
    """A passing metrics.json left by earlier weights (new ones trained, evaluate skipped or
    died part-way) must not let the new weights through the gate."""
    _metrics(candidate)
    candidate.state_dict.write_bytes(candidate.state_dict.read_bytes() + b"\0")  # new weights
    message = (
        r"refusing to export: .*metrics.json was not made from the current model.pt "
        r"\(sha256 [0-9a-f]{12}; it names [0-9a-f]{12}\): run `mnist-pipeline evaluate`"
    )
    with pytest.raises(GateError, match=message):
        export(MODEL, ExportParams(), GATES, candidate)
    _metrics(candidate, state_dict_sha256=None)  # a report that does not say: malformed
    with pytest.raises(PipelineError, match="metrics.json: field 'state_dict_sha256'"):
        export(MODEL, ExportParams(), GATES, candidate)
    assert not candidate.onnx.exists()


def test_stage_names_a_folder_where_the_onnx_file_belongs_before_exporting(
    candidate: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found before the export's work, not by the rename at its end (`.model.onnx.x.tmp.onnx ->
    models/model.onnx: Is a directory`)."""
    _metrics(candidate)
    candidate.onnx.unlink(missing_ok=True)
    candidate.onnx.mkdir()
    monkeypatch.setattr(export_module, "export_onnx", lambda *a, **k: pytest.fail("exported"))
    with pytest.raises(IsADirectoryError) as refused:
        export(MODEL, ExportParams(), GATES, candidate)
    assert refused.value.filename == str(candidate.onnx) and refused.value.filename2 is None
