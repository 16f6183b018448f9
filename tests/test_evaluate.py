"""Evaluate stage: metrics JSON, predictions CSV, plots, the gate (also through the CLI)."""

from __future__ import annotations

import csv
import errno
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from mnist_pipeline.core.errors import DataError, GateError, PipelineError
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.params import EvaluateParams, ModelParams, Params
from mnist_pipeline.data.dataset import load_mnist, normalise
from mnist_pipeline.data.manifest import dataset_sha256, file_sha256
from mnist_pipeline.evaluation.evaluate import PLOT_FILES, STAGING, evaluate
from mnist_pipeline.evaluation.quality import RELIABILITY_PLOT, ROBUSTNESS_PLOT, robustness_scores
from mnist_pipeline.evaluation.robustness import TRANSFORMS, robustness_set
from mnist_pipeline.model.network import build_model
from mnist_pipeline.model.weights import load_model, save_state_dict
from mnist_pipeline.training.train import train
from tests.conftest import REPO_ROOT
from tests.synthetic import make_dataset, write_data_dir

MODEL = ModelParams()
METRIC_KEYS = {
    "accuracy",
    "loss",
    "correct",
    "total",
    "min_accuracy",
    "passed",
    "per_class",
    "confusion_matrix",
    "dataset_sha256",
}


@pytest.fixture
def trained(tmp_path: Path, tiny_data_dir: Path, tiny_params: Params) -> Layout:
    """A project root (tmp_path) with the tiny dataset and weights trained on it."""
    layout = Layout(tmp_path)
    assert layout.data_dir == tiny_data_dir
    train(tiny_params.model, tiny_params.train, layout)
    return layout


def untrained(layout: Layout) -> None:
    """Random weights (about 10% accurate) in place of trained ones, recorded as trained."""
    torch.manual_seed(0)
    save_state_dict(build_model("classic"), layout.state_dict)
    record = json.loads(layout.train_record.read_text())
    record["state_dict_sha256"] = file_sha256(layout.state_dict)
    layout.train_record.write_text(json.dumps(record))


def read_predictions(layout: Layout) -> list[dict[str, str]]:
    with open(layout.predictions, newline="") as handle:
        return list(csv.DictReader(handle))


def test_metrics_predictions_and_plots(trained: Layout, capsys) -> None:
    result = evaluate(MODEL, EvaluateParams(min_accuracy=0.5), trained)
    report = json.loads(trained.metrics.read_text())
    assert set(report) >= METRIC_KEYS
    assert report["passed"] is True
    assert report["total"] == result.total == 128
    assert report["correct"] == result.correct == round(report["accuracy"] * 128)
    assert 0.5 <= report["accuracy"] == result.accuracy <= 1
    assert report["loss"] == pytest.approx(result.loss) and report["loss"] > 0
    assert report["min_accuracy"] == 0.5
    assert report["dataset_sha256"] == dataset_sha256(trained.data_dir)
    matrix = report["confusion_matrix"]
    assert len(matrix) == 10 and all(len(row) == 10 for row in matrix)
    assert sum(map(sum, matrix)) == 128
    assert sum(matrix[k][k] for k in range(10)) == report["correct"]
    assert list(report["per_class"]) == [str(k) for k in range(10)]
    assert set(report["per_class"]["3"]) == {"precision", "recall", "f1", "support"}
    assert sum(s["support"] for s in report["per_class"].values()) == 128

    rows = read_predictions(trained)
    assert list(rows[0]) == ["index", "actual", "predicted", "confidence"]
    assert [int(r["index"]) for r in rows] == list(range(128))
    labels = load_mnist(trained.data_dir).test_labels.tolist()
    assert [int(r["actual"]) for r in rows] == labels
    assert sum(r["actual"] == r["predicted"] for r in rows) == report["correct"]
    # the matrix's rows are the true digits, its columns the predicted ones, cell by cell
    pairs = Counter((int(r["actual"]), int(r["predicted"])) for r in rows)
    assert matrix == [[pairs[a, p] for p in range(10)] for a in range(10)]
    assert matrix != [list(column) for column in zip(*matrix, strict=True)]  # tells them apart
    for digit, row in report["per_class"].items():
        assert row["support"] == labels.count(int(digit))
        if row["support"]:
            assert row["recall"] == pytest.approx(pairs[int(digit), int(digit)] / row["support"])
    assert all(0.1 <= float(r["confidence"]) <= 1 for r in rows)  # max of 10 probabilities
    for name in PLOT_FILES:
        assert (trained.plots / name).read_bytes().startswith(b"\x89PNG")

    out = capsys.readouterr().out
    assert f"Test set: Average loss: {report['loss']:.4f}, Accuracy: {report['correct']}/128" in out
    assert "confusion matrix" in out


def test_calibration_and_robustness_are_reported(trained: Layout, capsys) -> None:
    """On random weights (one digit for nearly every image), so that scores against the
    model's own answers would differ from scores against the true digits."""
    untrained(trained)
    evaluate(MODEL, EvaluateParams(min_accuracy=0.0, robustness_per_transform=20), trained)
    report = json.loads(trained.metrics.read_text())
    calibration = report["calibration"]
    table = calibration["table"]
    assert sum(row["count"] for row in table) == 128
    gap = sum(row["count"] / 128 * abs(row["accuracy"] - row["confidence"]) for row in table)
    assert calibration["ece"] == pytest.approx(gap)
    # the bins' hits are the test set's correct answers (not the model's own agreement)
    assert sum(row["accuracy"] * row["count"] for row in table) == pytest.approx(report["correct"])
    robustness = report["robustness"]
    assert list(robustness["accuracy"]) == list(TRANSFORMS) and robustness["per_transform"] == 20
    # scored against the true digits, as computed here from the test set itself
    test = load_mnist(trained.data_dir)
    drawn = robustness_set(test.test_images.numpy(), test.test_labels.numpy(), 20)
    net = load_model(MODEL.arch, trained.state_dict)
    assert robustness["accuracy"] == robustness_scores(net, drawn, 64)["accuracy"]
    values = list(robustness["accuracy"].values())
    assert robustness["overall"] == pytest.approx(sum(values) / len(values))
    assert all(0 <= v <= 1 for v in values)
    scores = json.loads(trained.scores.read_text())
    assert scores["ece"] == round(calibration["ece"], 4)
    assert scores["robustness"] == round(robustness["overall"], 4)
    for name in (RELIABILITY_PLOT, ROBUSTNESS_PLOT):
        assert (trained.plots / name).read_bytes().startswith(b"\x89PNG")
    assert "calibration: ECE" in capsys.readouterr().out
    evaluate(MODEL, EvaluateParams(min_accuracy=0.0, robustness_per_transform=0), trained)
    assert json.loads(trained.metrics.read_text())["robustness"] is None
    assert not (trained.plots / ROBUSTNESS_PLOT).exists()  # no stale plot


def test_failed_gate_still_writes_reports_then_raises(trained: Layout) -> None:
    untrained(trained)
    with pytest.raises(GateError, match=r"accuracy 0\.\d{4} is below the gate") as caught:
        evaluate(MODEL, EvaluateParams(min_accuracy=0.9), trained)
    assert "evaluate.min_accuracy=0.9" in str(caught.value)
    report = json.loads(trained.metrics.read_text())
    assert report["passed"] is False and report["accuracy"] < 0.9
    assert len(read_predictions(trained)) == 128


@pytest.mark.parametrize("failing", ["plot_confusion", "plot_robustness", "metrics.json"])
def test_a_failure_while_writing_leaves_the_previous_evaluation_whole(
    trained: Layout, failing: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk at one plot (after the predictions and other plots were made), or at
    metrics.json (after every other file): every file of the previous evaluation stays as it
    was, still consistent with its metrics.json."""
    from mnist_pipeline.core.reports import Metrics
    from mnist_pipeline.evaluation import plots

    (trained.plots).mkdir(parents=True, exist_ok=True)
    (trained.plots / "my-notes.png").write_bytes(b"\x89PNG by hand")  # not evaluate's
    evaluate(MODEL, EvaluateParams(min_accuracy=0.0, robustness_per_transform=0), trained)
    listed = json.loads(trained.metrics.read_text())["outputs"]
    assert "reports/plots/my-notes.png" not in listed
    assert (trained.plots / "my-notes.png").read_bytes() == b"\x89PNG by hand"  # left alone
    before = {p: p.read_bytes() for p in trained.reports.rglob("*") if p.is_file()}
    untrained(trained)  # other weights: every output would change

    def full_disk(*args) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(args[-1]))  # a staged file

    if failing == "metrics.json":
        monkeypatch.setattr(Metrics, "write", full_disk)
    else:
        monkeypatch.setattr(plots, failing, full_disk)
    with pytest.raises(OSError, match="No space left on device") as info:
        evaluate(MODEL, EvaluateParams(min_accuracy=0.0, robustness_per_transform=2), trained)
    named = Path(info.value.filename)  # the file it stands for, not the staging folder's
    assert named.parent == (trained.reports if failing == "metrics.json" else trained.plots)
    assert named.suffix in (".json", ".png") and not named.name.startswith(".")
    after = {p: p.read_bytes() for p in trained.reports.rglob("*") if p.is_file()}
    assert after == before  # nothing replaced, no stale plot removed, no staging left
    outputs = json.loads(trained.metrics.read_text())["outputs"]
    assert len(outputs) >= 6  # predictions, headline, plots: each as metrics.json records it
    assert all(file_sha256(trained.root / path) == sha for path, sha in outputs.items())


def test_staging_a_killed_evaluate_left_goes_and_a_folder_in_a_plots_place_is_found_first(
    trained: Layout,
) -> None:
    trained.plots.mkdir(parents=True)
    old, recent = trained.reports / f"{STAGING}old", trained.plots / f"{STAGING}new"
    for folder in (old, recent):
        folder.mkdir()
        (folder / "predictions.csv").write_text("half")
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(old, (two_days_ago, two_days_ago))
    (trained.plots / ROBUSTNESS_PLOT).mkdir()  # where evaluate's last plot goes
    with pytest.raises(IsADirectoryError, match=ROBUSTNESS_PLOT):
        evaluate(MODEL, EvaluateParams(min_accuracy=0.0), trained)
    assert not trained.metrics.exists() and not trained.predictions.exists()  # before scoring
    (trained.plots / ROBUSTNESS_PLOT).rmdir()
    evaluate(MODEL, EvaluateParams(min_accuracy=0.0), trained)
    assert not old.exists() and recent.is_dir()  # a day old: left by a killed one; else running
    left = sorted(p.name for p in trained.reports.rglob(f"{STAGING}*"))
    assert left == [f"{STAGING}new"]


def test_an_empty_test_split_is_named_not_scored_as_zero(tmp_path: Path, tiny_params: Params):
    """Weights trained on a dataset whose test split is empty: nothing to score, so no gate
    verdict either way (accuracy 0/0) and no report."""
    layout = Layout(tmp_path)
    write_data_dir(layout.data_dir, make_dataset(n_test=0))
    train(tiny_params.model, tiny_params.train, layout)
    with pytest.raises(DataError, match="the test split holds no images, so evaluate has"):
        evaluate(MODEL, EvaluateParams(min_accuracy=0.5), layout)
    assert not layout.metrics.exists()


def test_missing_weights_is_a_clear_error(tmp_path: Path, tiny_data_dir: Path) -> None:
    layout = Layout(tmp_path)
    with pytest.raises(PipelineError, match="no trained weights at .*model.pt"):
        evaluate(MODEL, EvaluateParams(), layout)
    assert not layout.metrics.exists() and not layout.predictions.exists()


def test_training_curves_only_with_a_history(trained: Layout) -> None:
    evaluate(MODEL, EvaluateParams(min_accuracy=0.0), trained)
    assert (trained.plots / "training_curves.png").is_file()
    trained.train_history.unlink()
    with pytest.raises(GateError, match=r"train_history.csv is missing but .*model.json records"):
        evaluate(MODEL, EvaluateParams(min_accuracy=0.0), trained)
    record = json.loads(trained.train_record.read_text())
    del record["history_sha256"]  # a record from before histories were recorded
    trained.train_record.write_text(json.dumps(record))
    evaluate(MODEL, EvaluateParams(min_accuracy=0.0), trained)
    assert not (trained.plots / "training_curves.png").exists()  # no stale plot left


def test_only_weights_and_history_a_finished_training_recorded_are_scored(
    trained: Layout,
) -> None:
    """A training stopped between its writes leaves model.json naming other files: refused
    before anything is written."""
    torch.manual_seed(3)
    save_state_dict(build_model("classic"), trained.state_dict)  # new weights, old record
    with pytest.raises(GateError, match=r"model.json was not made from the current model.pt"):
        evaluate(MODEL, EvaluateParams(min_accuracy=0.0), trained)
    assert not trained.metrics.exists() and not trained.predictions.exists()
    untrained(trained)  # recorded weights, but the history is another training's
    trained.train_history.write_text(trained.train_history.read_text() + "\n")
    with pytest.raises(GateError, match=r"not made from the current train_history.csv"):
        evaluate(MODEL, EvaluateParams(min_accuracy=0.0), trained)
    trained.train_record.unlink()
    with pytest.raises(
        PipelineError, match=r"no report at .*model.json: run `mnist-pipeline train`"
    ):
        evaluate(MODEL, EvaluateParams(min_accuracy=0.0), trained)


def test_weights_trained_on_another_dataset_are_not_scored(trained: Layout) -> None:
    """Trained on one dataset, then another fetched (another data.sha256): its test set may
    hold images the model learnt from, so it is refused before anything is written."""
    from tests.synthetic import make_dataset, write_data_dir

    write_data_dir(trained.data_dir, make_dataset(seed=9))
    with pytest.raises(GateError, match=r"model.json was not made from the current dataset"):
        evaluate(MODEL, EvaluateParams(min_accuracy=0.0), trained)
    assert not trained.metrics.exists() and not trained.predictions.exists()


def run_cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "mnist_pipeline", "--params", str(root / "params.yaml")]
    return subprocess.run(
        [*command, "--root", str(root), *args],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(("weights", "code"), [("trained", 0), ("untrained", 1)])
def test_cli_gate_exit_code_and_message(trained: Layout, weights: str, code: int) -> None:
    if weights == "untrained":
        untrained(trained)
    (trained.root / "params.yaml").write_text(yaml.safe_dump({"evaluate": {"min_accuracy": 0.5}}))
    done = run_cli(trained.root, "evaluate")
    assert done.returncode == code, done.stderr
    assert "Test set: Average loss:" in done.stdout
    if code:
        assert "error: accuracy 0." in done.stderr
        assert "is below the gate evaluate.min_accuracy=0.5" in done.stderr
        assert "Traceback" not in done.stderr
    assert json.loads(trained.metrics.read_text())["passed"] is (code == 0)


@pytest.mark.e2e
def test_short_run_on_real_mnist(real_run: Layout) -> None:
    """The shared real-data run (one capped epoch, the real stages) beats 95% on all 10k."""
    report = json.loads(real_run.metrics.read_text())
    assert report["total"] == 10_000 and report["passed"] is True
    assert report["accuracy"] > 0.95
    assert report["dataset_sha256"] == dataset_sha256(real_run.data_dir)


def test_evaluate_loss_and_confidence_are_the_models(trained: Layout) -> None:
    evaluate(MODEL, EvaluateParams(min_accuracy=0.0, robustness_per_transform=0), trained)
    report = json.loads(trained.metrics.read_text())
    data = load_mnist(trained.data_dir)
    net = load_model(MODEL.arch, trained.state_dict)
    with torch.no_grad():
        logits = net(normalise(data.test_images))
    labels = data.test_labels.long()
    assert report["loss"] == pytest.approx(F.cross_entropy(logits, labels).item(), abs=1e-5)
    top = torch.softmax(logits, 1).max(1).values.tolist()
    written = [float(r["confidence"]) for r in read_predictions(trained)]
    assert written == pytest.approx(top, abs=2e-6)
