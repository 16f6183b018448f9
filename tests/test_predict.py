"""Predict: torch-free import path, per-file errors, JSON output, model resolution, real digits."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mnist_pipeline.cli.app import app
from mnist_pipeline.core.errors import PipelineError, RegistryError
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.service_params import RegistryParams
from mnist_pipeline.pipeline.register import register_candidate
from mnist_pipeline.serving.predict import predict_files, resolve_model
from tests.conftest import REPO_ROOT
from tests.example_helpers import draw_digit, reshape_failing_model


@pytest.fixture
def model_path(untrained: Layout) -> Path:
    """The shared untrained ONNX model (random weights: predictions are arbitrary but valid)."""
    return untrained.onnx


def defaults_file(folder: Path) -> Path:
    """An empty params file: every section at its defaults (not the repo's params.yaml)."""
    path = folder / "params.yaml"
    path.write_text("{}\n")
    return path


def _run(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_predict_modules_do_not_import_torch(tmp_path: Path) -> None:
    code = (
        "import sys, mnist_pipeline.serving.predict, mnist_pipeline.data.preprocess\n"
        "import mnist_pipeline.cli.app\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    done = _run(code, REPO_ROOT)
    assert done.returncode == 0, done.stderr


def test_cli_predict_command_does_not_import_torch(model_path: Path, tmp_path: Path) -> None:
    image = draw_digit(tmp_path / "d.png")
    code = (
        "import sys\n"
        "from mnist_pipeline.cli.app import app\n"
        f"args = ['--params', {str(defaults_file(tmp_path))!r}, '--root', {str(tmp_path)!r},\n"
        f"        'predict', '--json', '--model', {str(model_path)!r}, {str(image)!r}]\n"
        "code = app(args, standalone_mode=False)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "sys.exit(code or 0)\n"
    )
    done = _run(code, tmp_path)
    assert done.returncode == 0, done.stderr
    [entry] = json.loads(done.stdout)
    assert entry["file"] == str(image) and entry["digit"] in range(10)


def _bad_inputs(folder: Path) -> dict[str, str]:
    (folder / "notes.png").write_text("not an image")
    good = draw_digit(folder / "whole.png").read_bytes()
    (folder / "cut.png").write_bytes(good[: len(good) // 2])
    Image.new("L", (60, 60), 255).save(folder / "blank.png")
    Image.new("1", (8000, 6500)).save(folder / "bomb.png")  # 52 MP, a few KB on disk
    return {
        "missing.png": "no such file",
        f"{'a' * 300}.png": "cannot read (File name too long)",  # an OSError of its own
        "notes.png": "not a recognised image",
        "cut.png": "cannot read or decode",
        "blank.png": "blank image",
        "bomb.png": "more than the limit",
    }


def test_bad_files_get_errors_and_the_rest_is_classified(model_path: Path, tmp_path: Path):
    bad = _bad_inputs(tmp_path)
    good = [draw_digit(tmp_path / "a.png"), draw_digit(tmp_path / "b.jpg", 5, rgb=True)]
    files = [good[0], *(tmp_path / name for name in bad), good[1]]
    result = predict_files(model_path, files, top=3)
    assert [p.file for p in result.predictions] == [str(f) for f in files]
    assert result.failed == len(bad)
    for prediction, (name, message) in zip(result.predictions[1:-1], bad.items(), strict=True):
        assert prediction.digit is None and message in prediction.error and name in prediction.error
    for prediction in (result.predictions[0], result.predictions[-1]):
        assert prediction.error is None and prediction.digit in range(10)
        probs = [p for _, p in prediction.top]
        assert len(prediction.top) == 3 and probs == sorted(probs, reverse=True)
        assert prediction.top[0] == (prediction.digit, prediction.probability)
        assert 0.0 < prediction.probability <= 1.0
        # each file's own answer (the model gives one digit to nearly every image, but not
        # the same probabilities): as when the file is classified alone
        (alone,) = predict_files(model_path, [Path(prediction.file)], top=3).predictions
        assert [d for d, _ in prediction.top] == [d for d, _ in alone.top]
        assert [p for _, p in prediction.top] == pytest.approx([p for _, p in alone.top], abs=1e-6)
    first, last = ([p for _, p in r.top] for r in (result.predictions[0], result.predictions[-1]))
    assert first != pytest.approx(last, abs=1e-6)  # so a swap of answers would show


def test_files_past_one_batch_get_their_own_answers(
    model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mnist_pipeline.serving import predict

    files = [draw_digit(tmp_path / f"{i}.png", i) for i in range(10)]
    alone = [predict_files(model_path, [f], top=10).predictions[0].top for f in files]
    monkeypatch.setattr(predict, "BATCH", 4)  # three runs of the model: 4, 4 and 2 images
    batched = [p.top for p in predict_files(model_path, files, top=10).predictions]
    for mine, own in zip(batched, alone, strict=True):
        assert [d for d, _ in mine] == [d for d, _ in own]
        assert [p for _, p in mine] == pytest.approx([p for _, p in own], abs=1e-6)


def test_a_model_that_fails_when_run_is_one_error_naming_it(tmp_path: Path) -> None:
    model = tmp_path / "odd.onnx"
    model.write_bytes(reshape_failing_model())
    with pytest.raises(PipelineError, match=f"onnxruntime failed running {model}: "):
        predict_files(model, [draw_digit(tmp_path / "a.png")])


def test_cli_json_output_and_exit_code(model_path: Path, tmp_path: Path) -> None:
    good = draw_digit(tmp_path / "a.png")
    base = ["--params", str(defaults_file(tmp_path)), "--root", str(tmp_path), "predict"]
    runner = CliRunner()
    done = runner.invoke(app, [*base, "--json", "--top", "3", "-m", str(model_path), str(good)])
    assert done.exit_code == 0, done.output
    [entry] = json.loads(done.stdout)
    assert set(entry) == {"file", "digit", "probability", "top"} and len(entry["top"]) == 3
    missing = tmp_path / "missing.png"
    done = runner.invoke(app, [*base, "--json", "-m", str(model_path), str(good), str(missing)])
    assert done.exit_code == 1
    entries = json.loads(done.stdout)
    assert "top" not in entries[0] and entries[1] == {
        "file": str(missing),
        "error": f"{missing}: no such file",
    }
    done = runner.invoke(app, [*base, "--top", "2", "-m", str(model_path), str(good)])
    assert done.exit_code == 0 and f"{good}: " in done.stdout and "top: " in done.stdout
    done = runner.invoke(app, [*base, "-m", str(model_path), str(missing)])
    assert done.exit_code == 1
    assert f"error: {missing}: no such file" in done.output  # the path once
    assert done.output.count(str(missing)) == 1
    odd = draw_digit(tmp_path / "red\x1b[31m\nline.png")  # no escape reaches the terminal
    done = runner.invoke(app, [*base, "-m", str(model_path), str(odd), str(odd) + "x"])
    assert done.exit_code == 1 and "\x1b" not in done.output, done.output
    assert f"{tmp_path}/red\\x1b[31m\\nline.png: " in done.stdout
    assert f"{tmp_path}/red\\x1b[31m\\nline.pngx: no such file" in done.output


def test_predict_with_a_model_path_needs_no_params_file(model_path: Path, tmp_path: Path) -> None:
    empty = tmp_path / "no-project"
    empty.mkdir()  # no params.yaml here
    digit = draw_digit(tmp_path / "a.png")
    args = ["--root", str(empty), "predict", "-m", str(model_path), str(digit)]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    assert f"{digit}: " in done.stdout


def test_resolve_model_paths_and_default(model_path: Path, tmp_path: Path) -> None:
    layout, registry = Layout(tmp_path), RegistryParams()
    assert resolve_model(str(model_path), layout, registry) == (model_path, str(model_path))
    with pytest.raises(PipelineError, match="model file not found"):
        resolve_model(str(tmp_path / "none.onnx"), layout, registry)
    (tmp_path / "models.onnx").mkdir()
    with pytest.raises(PipelineError, match="models.onnx is a folder, not an ONNX file"):
        resolve_model(str(tmp_path / "models.onnx"), layout, registry)
    os.mkfifo(tmp_path / "fifo.onnx")
    with pytest.raises(PipelineError, match=r"fifo.onnx: not a regular file \(a device, pipe"):
        resolve_model(str(tmp_path / "fifo.onnx"), layout, registry)
    with pytest.raises(PipelineError, match="no model"):
        resolve_model(None, layout, registry)
    layout.model_dir.mkdir()
    shutil.copy(model_path, layout.onnx)
    fallback = resolve_model(None, layout, registry)
    assert fallback == (layout.onnx, f"{layout.onnx} (the registry has no production version)")
    with pytest.raises(RegistryError, match="unknown alias 'production'"):
        resolve_model("production", layout, registry)


def test_resolve_model_prefers_the_registry_production(model_path: Path, tmp_path: Path):
    from mnist_pipeline.registry import Registry
    from tests.registry_helpers import (
        PARAMS,
        candidate_in,
        writable,
        write_reports,
        write_train_record,
    )
    from tests.registry_helpers import (
        stored as stored_file,
    )

    candidate = tmp_path / "candidate"
    candidate.mkdir()
    shutil.copy(model_path, candidate / "model.onnx")
    shutil.copy(model_path.with_name("model.pt"), candidate / "model.pt")
    (candidate / "train_history.csv").write_text("epoch,loss\n1,0.5\n")
    write_train_record(candidate)
    write_reports(candidate)
    layout, registry = Layout(tmp_path), RegistryParams()
    models = Registry(layout.registry_root(registry.root), registry.model_name)
    register_candidate(models, candidate_in(candidate), PARAMS)
    layout.model_dir.mkdir()
    shutil.copy(model_path, layout.onnx)

    production = resolve_model(None, layout, registry)
    assert production.label == "mnist-cnn v1 (production)"
    assert (resolve_model("v01", layout, registry).label, resolve_model("1", layout, registry)) == (
        "mnist-cnn v1",
        (production.path, "mnist-cnn v1"),
    )
    stored = production.path
    assert stored != layout.onnx
    assert predict_files(stored, [draw_digit(tmp_path / "a.png")]).failed == 0
    writable(stored).write_bytes(stored.read_bytes() + b"\0")  # a damaged local copy
    assert resolve_model(None, layout, registry).path == stored  # is replaced from the store
    assert predict_files(stored, [draw_digit(tmp_path / "b.png")]).failed == 0
    for damaged in (stored, stored_file(models, 1, "model.onnx")):  # the store's too: refused
        writable(damaged).write_bytes(damaged.read_bytes() + b"\0")
    with pytest.raises(RegistryError, match="refusing to load"):
        resolve_model(None, layout, registry)


def test_non_mnist_model_is_refused(tmp_path: Path) -> None:
    from tests.registry_helpers import make_onnx

    make_onnx(tmp_path / "other.onnx", seed=0)
    with pytest.raises(PipelineError, match="not an mnist-pipeline model"):
        predict_files(tmp_path / "other.onnx", [draw_digit(tmp_path / "a.png")])


def named_like_ours(path: Path, classes: int, element: int, batch: str | int = "N") -> Path:
    """An ONNX graph with the contract's names but `classes` outputs of `element` type, for
    `batch` images (a name: any number)."""
    import onnx
    from onnx import helper, numpy_helper

    dtype = helper.tensor_dtype_to_np_dtype(element)
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.normal(size=(784, classes)).astype(dtype), "W")
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["image"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "W"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "named-like-ours",
        [helper.make_tensor_value_info("image", element, [batch, 1, 28, 28])],
        [
            helper.make_tensor_value_info(name, element, [batch, classes])
            for name in ("logits", "probabilities")
        ],
        initializer=[weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def test_a_model_of_other_shapes_or_types_is_refused_in_one_line(tmp_path: Path) -> None:
    from onnx import TensorProto

    from mnist_pipeline.export.session import open_session

    five = named_like_ours(tmp_path / "five.onnx", 5, TensorProto.FLOAT)
    double = named_like_ours(tmp_path / "double.onnx", 10, TensorProto.DOUBLE)
    one = named_like_ours(tmp_path / "one.onnx", 10, TensorProto.FLOAT, batch=1)
    digit = draw_digit(tmp_path / "a.png")
    for model, message in (
        (one, r"'image' is tensor\(float\) \[1, 1, 28, 28\] \(expected tensor\(float\) \[N, 1"),
        (
            five,
            r"'(logits|probabilities)' is tensor\(float\) \['N', 5\] \(expected .* \[N, 10\]",
        ),
        (double, r"'image' is tensor\(double\) \['N', 1, 28, 28\] \(expected tensor\(float\)"),
    ):
        with pytest.raises(
            PipelineError, match=f"{model}.* is not an mnist-pipeline model: {message}"
        ):
            predict_files(model, [digit])
        with pytest.raises(PipelineError, match=message):
            open_session(model, outputs=("logits", "probabilities"))
    ours = named_like_ours(tmp_path / "ours.onnx", 10, TensorProto.FLOAT)
    assert predict_files(ours, [digit]).failed == 0  # the names, types and shapes: taken


# ---- end to end on real digits


def render(digit: np.ndarray, path: Path, offset: tuple[int, int], rgb: bool) -> Path:
    """A 28x28 MNIST digit as a large dark-on-light image, placed off-centre."""
    ink = Image.fromarray(digit).resize((100, 100), Image.Resampling.BICUBIC)
    canvas = Image.new("L", (170, 200), 255)
    canvas.paste(Image.eval(ink, lambda v: 255 - v), offset)
    (canvas.convert("RGB") if rgb else canvas).save(path, **({"quality": 90} if rgb else {}))
    return path


@pytest.mark.e2e
def test_real_digits_are_recognised(real_run: Layout, tmp_path: Path) -> None:
    from mnist_pipeline.data.dataset import load_mnist

    layout = real_run
    mnist = load_mnist(layout.data_dir)
    rng = np.random.default_rng(0)
    picks = rng.choice(len(mnist.test_labels), size=50, replace=False)
    files, labels = [], []
    for n, i in enumerate(picks):
        offset = (int(rng.integers(0, 70)), int(rng.integers(0, 100)))
        name = f"digit{n}.{'jpg' if n % 3 == 0 else 'png'}"
        files.append(render(mnist.test_images[i].numpy(), tmp_path / name, offset, n % 2 == 0))
        labels.append(int(mnist.test_labels[i]))
    bad = _bad_inputs(tmp_path)

    result = predict_files(layout.onnx, [*files, *(tmp_path / name for name in bad)])
    digits = [p.digit for p in result.predictions[: len(files)]]
    correct = sum(d == label for d, label in zip(digits, labels, strict=True))
    assert correct >= 45, f"{correct}/50 recognised"
    assert result.failed == len(bad)
