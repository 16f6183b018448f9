"""The opt-in wide architecture goes through every stage unchanged (tiny data, a few batches)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.params import Params
from mnist_pipeline.data.dataset import load_mnist, normalise
from mnist_pipeline.data.preprocess import preprocess_file
from mnist_pipeline.model.network import build_model, fold_batch_norm
from mnist_pipeline.model.weights import load_model
from mnist_pipeline.pipeline import stages
from mnist_pipeline.registry import Registry
from mnist_pipeline.serving.predict import predict_files
from tests.example_helpers import draw_digit


def test_batch_norm_folding_keeps_the_function() -> None:
    torch.manual_seed(0)
    net = build_model("wide")
    net.train()
    for _ in range(3):  # move the running statistics away from their initial values
        net(torch.randn(16, 1, 28, 28) * 2 + 0.5)
    for norm in (m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        torch.nn.init.uniform_(norm.weight, 0.5, 2.0)  # and the affine part from (1, 0)
        torch.nn.init.uniform_(norm.bias, -1.0, 1.0)
    net.eval()
    folded = fold_batch_norm(net)
    kinds = {type(m).__name__ for m in folded.modules()}
    assert "BatchNorm2d" not in kinds and "BatchNorm2d" in {type(m).__name__ for m in net.modules()}
    x = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(folded(x), net(x), atol=1e-5)
    classic = build_model("classic").eval()
    assert {type(m) for m in fold_batch_norm(classic).modules()} == {
        type(m) for m in classic.modules()
    }


def test_wide_model_trains_exports_checks_registers_and_predicts(
    tmp_path: Path, tiny_data_dir: Path, tiny_params: Params
) -> None:
    layout = Layout(tmp_path)
    params = tiny_params.model_copy(
        update={
            "model": tiny_params.model.model_copy(update={"arch": "wide"}),
            "evaluate": tiny_params.evaluate.model_copy(
                update={"min_accuracy": 0.0, "robustness_per_transform": 10}
            ),
        }
    )
    for name in ("train", "evaluate", "export", "parity", "register"):
        stages.run(name, params, layout)
    graph = onnx.load(str(layout.onnx)).graph
    ops = [node.op_type for node in graph.node]
    assert ops.count("Conv") == 5 and "BatchNormalization" not in ops and "Dropout" not in ops
    meta = ort.InferenceSession(str(layout.onnx)).get_modelmeta().custom_metadata_map
    assert meta["arch"] == "wide"
    # onnxruntime answers like the trained (unfolded) network.
    net = load_model("wide", layout.state_dict)
    images = load_mnist(layout.data_dir).test_images[:32]
    with torch.no_grad():
        expected = net(normalise(images)).numpy()
    session = ort.InferenceSession(str(layout.onnx))
    (logits,) = session.run(["logits"], {"image": images.unsqueeze(1).numpy() / np.float32(255)})
    np.testing.assert_allclose(logits, expected, atol=1e-4)
    assert json.loads(layout.parity_report.read_text())["passed"] is True
    card = Registry(tmp_path / "registry", "mnist-cnn").card("production")
    assert card["params"]["model"]["arch"] == "wide"
    image = draw_digit(tmp_path / "digit.png", 3)
    (prediction,) = predict_files(layout.onnx, [image], top=3).predictions
    (drawn,) = session.run(["logits"], {"image": preprocess_file(image)[None, None]})
    assert prediction.digit == int(drawn.argmax()) == prediction.top[0][0]
    assert [digit for digit, _ in prediction.top] == np.argsort(-drawn[0])[:3].tolist()


def test_weights_of_another_network_or_no_weights_are_one_line(tmp_path: Path) -> None:
    from mnist_pipeline.core.errors import PipelineError
    from mnist_pipeline.model.weights import save_state_dict

    classic = tmp_path / "classic.pt"
    save_state_dict(build_model("classic"), classic)
    shrunk = tmp_path / "shrunk.pt"
    state = build_model("classic").state_dict()
    torch.save({**state, "fc2.weight": state["fc2.weight"][:5]}, shrunk)
    garbage = tmp_path / "garbage.pt"
    garbage.write_text("hello world\n")
    cases = {
        (classic, "wide"): r"do not fit arch 'wide' \(\d+ missing, e\.g\. '.*'; \d+ unexpected",
        (shrunk, "classic"): r"\(1 of another shape, e\.g\. 'fc2\.weight'\): set model\.arch",
        (garbage, "classic"): r"cannot load weights from .*garbage\.pt \(\w+: .*\): not a file",
    }
    for (path, arch), message in cases.items():
        with pytest.raises(PipelineError, match=message) as refused:
            load_model(arch, path)
        assert "\n" not in str(refused.value)
    # the loader's own advice (load with weights_only=False, which runs what the file holds)
    # is not passed on; what it refused is
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(classic.read_bytes()[:1000])
    code = tmp_path / "code.pt"
    torch.save({"fc1.weight": os.getcwd}, code)  # what a full unpickler would import and run
    for path, reason in (
        (garbage, "garbage.pt ("),  # what the unpickler says of text varies
        (truncated, "(RuntimeError: PytorchStreamReader failed reading zip archive: "),
        (code, "(not tensors the weights-only loader reads: it names posix.getcwd)"),
    ):
        with pytest.raises(PipelineError) as refused:
            load_model("classic", path)
        assert reason in str(refused.value) and "weights_only" not in str(refused.value)
        assert len(str(refused.value)) < 300
