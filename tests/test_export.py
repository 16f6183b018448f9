"""ONNX export of an untrained ClassicNet: interface, graph, checker, metadata, atomicity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import mnist_pipeline
from mnist_pipeline import predict
from mnist_pipeline.dataset import MNIST_MEAN, MNIST_STD, dataset_sha256
from mnist_pipeline.errors import GateError, PipelineError
from mnist_pipeline.export import collect_metadata, export_onnx
from mnist_pipeline.manifest import file_sha256
from mnist_pipeline.model import build_model
from mnist_pipeline.params import ExportParams
from mnist_pipeline.weights import load_model, save_state_dict

CALLER_META = {"test_accuracy": "0.9912", "training_data_sha256": "ab" * 32, "model_version": "7"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    save_state_dict(build_model("classic"), folder / "model.pt")
    result = export_onnx(
        ExportParams(), "classic", folder / "model.pt", folder / "model.onnx", CALLER_META
    )
    return folder, result


def test_one_self_contained_file(exported) -> None:
    folder, result = exported
    assert sorted(p.name for p in folder.iterdir()) == ["model.onnx", "model.pt"]
    assert result.onnx_path == folder / "model.onnx"
    assert result.sha256 == file_sha256(result.onnx_path)
    assert result.size_bytes == result.onnx_path.stat().st_size
    proto = onnx.load(str(result.onnx_path), load_external_data=False)
    assert not any(onnx.external_data_helper.uses_external_data(t) for t in proto.graph.initializer)


def test_graph_interface_and_no_dropout(exported) -> None:
    proto = onnx.load(str(exported[1].onnx_path))
    ops = {node.op_type for node in proto.graph.node}
    assert "Dropout" not in ops and {"Conv", "Softmax"} <= ops
    assert [i.name for i in proto.graph.input] == ["image"] == [predict.INPUT_NAME]
    assert [o.name for o in proto.graph.output] == ["logits", "probabilities"]
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [1, 28, 28]
    assert {o.domain: o.version for o in proto.opset_import}[""] == 18


def test_checker_full_check_passes(exported) -> None:
    onnx.checker.check_model(str(exported[1].onnx_path), full_check=True)


def test_metadata_is_readable_with_onnxruntime(exported) -> None:
    session = ort.InferenceSession(str(exported[1].onnx_path))
    meta = session.get_modelmeta().custom_metadata_map
    for key, value in CALLER_META.items():
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
    folder, result = exported
    session = ort.InferenceSession(str(result.onnx_path))
    pixels = np.random.default_rng(n).uniform(0, 1, (n, 1, 28, 28)).astype(np.float32)
    logits, probs = session.run(["logits", "probabilities"], {"image": pixels})
    assert logits.shape == probs.shape == (n, 10)
    with torch.inference_mode():
        expected = load_model("classic", folder / "model.pt")(
            (torch.from_numpy(pixels) - MNIST_MEAN) / MNIST_STD
        )
    np.testing.assert_allclose(logits, expected.numpy(), atol=1e-5)
    np.testing.assert_allclose(probs, torch.softmax(expected, 1).numpy(), atol=1e-6)


def test_opset_17(exported, tmp_path: Path) -> None:
    folder, _ = exported
    result = export_onnx(
        ExportParams(opset=17), "classic", folder / "model.pt", tmp_path / "m.onnx", {}
    )
    proto = onnx.load(str(result.onnx_path))
    assert {o.domain: o.version for o in proto.opset_import}[""] == 17
    session = ort.InferenceSession(str(result.onnx_path))
    assert session.get_modelmeta().custom_metadata_map["opset"] == "17"
    assert session.run(None, {"image": np.zeros((2, 1, 28, 28), np.float32)})[0].shape == (2, 10)


def test_failed_check_leaves_the_existing_file(exported, tmp_path: Path, monkeypatch) -> None:
    folder, _ = exported
    target = tmp_path / "model.onnx"
    target.write_bytes(b"previous model")

    def reject(*_args, **_kwargs):
        raise onnx.checker.ValidationError("broken on purpose")

    monkeypatch.setattr(onnx.checker, "check_model", reject)
    with pytest.raises(PipelineError, match="broken on purpose"):
        export_onnx(ExportParams(), "classic", folder / "model.pt", target, {})
    assert target.read_bytes() == b"previous model"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_caller_cannot_override_builtin_metadata(exported, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="class_labels"):
        export_onnx(
            ExportParams(), "classic", exported[0] / "model.pt", tmp_path / "m.onnx",
            {"class_labels": "[]"},
        )  # fmt: skip
    assert not (tmp_path / "m.onnx").exists()


def test_missing_weights_are_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match="no trained weights"):
        export_onnx(ExportParams(), "classic", tmp_path / "none.pt", tmp_path / "m.onnx", {})


# ---- collect_metadata: the gate and the dataset hash


def _metrics(path: Path, **fields) -> Path:
    report = {"accuracy": 0.991, "passed": True, "min_accuracy": 0.98} | fields
    path.write_text(json.dumps(report))
    return path


def test_collect_metadata(tmp_path: Path, tiny_data_dir: Path) -> None:
    metrics = _metrics(tmp_path / "metrics.json", dataset_sha256=dataset_sha256(tiny_data_dir))
    meta = collect_metadata(metrics, tiny_data_dir, model_version="3")
    assert meta == {
        "training_data_sha256": dataset_sha256(tiny_data_dir),
        "test_accuracy": "0.991",
        "model_version": "3",
    }
    assert "model_version" not in collect_metadata(metrics, tiny_data_dir)


def test_export_refused_when_gate_failed(tmp_path: Path, tiny_data_dir: Path) -> None:
    metrics = _metrics(tmp_path / "metrics.json", accuracy=0.5, passed=False)
    with pytest.raises(GateError, match="did not pass the accuracy gate"):
        collect_metadata(metrics, tiny_data_dir)


def test_export_refused_without_or_with_stale_metrics(tmp_path: Path, tiny_data_dir: Path) -> None:
    with pytest.raises(PipelineError, match="run `mnist-pipeline evaluate` first"):
        collect_metadata(tmp_path / "none.json", tiny_data_dir)
    stale = _metrics(tmp_path / "metrics.json", dataset_sha256="0" * 64)
    with pytest.raises(PipelineError, match="another dataset"):
        collect_metadata(stale, tiny_data_dir)
