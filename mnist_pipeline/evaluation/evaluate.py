"""Evaluate stage: score the trained weights on the 10k test set, write reports, apply the gate.

The stage only wires the parts: scoring (scoring.py) on the test set and on the extra holdout
(the share of the labelled digits users added that training never saw; inbox/extra.py),
calibration (metrics.calibration), robustness (accuracy on test digits drawn like real photos,
quality.py), plots (plots.py, quality.py), the report files and text (report.py), and last the
gate (gate.enforce_evaluation). Scores only weights whose training finished (model.json names
model.pt and the history). Writes layout.predictions (CSV: index,actual,predicted,confidence),
the PNG plots, layout.scores and last layout.metrics (JSON, with the SHA-256 of the others),
prints the report, and only then raises GateError when accuracy < min_accuracy (or, when set,
the extra holdout's accuracy < min_extra_accuracy). Every file is made in a hidden folder beside
its target first (in layout.reports, and in layout.plots, which may be on another disk) and
moved into place only once all were made: a failure while scoring or writing (a full disk, an
interrupt) leaves the previous evaluation whole.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mnist_pipeline.core.atomic import (
    check_targets,
    replace_all,
    unchanging,
    write_json,
    write_text,
)
from mnist_pipeline.core.errors import GateError
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.params import EvaluateParams, ModelParams
from mnist_pipeline.core.reports import Metrics, TrainRecord, read_report
from mnist_pipeline.core.text import printable
from mnist_pipeline.data.dataset import load_mnist, require_test_images
from mnist_pipeline.data.manifest import dataset_sha256, file_sha256
from mnist_pipeline.evaluation import metrics, plots, quality, report, scoring
from mnist_pipeline.evaluation.gate import accuracy_passes, enforce_evaluation, made_from
from mnist_pipeline.inbox import extra
from mnist_pipeline.model.weights import load_model_and_hash

PLOT_FILES = ("misclassified.png", "correct.png", "confusion_matrix.png", "training_curves.png")
EXTRA_PLOT = "extra_misclassified.png"  # the extra holdout's mistakes (only with a holdout)
# every plot evaluate makes; one not made this time is removed (never a stale one left behind)
PLOTS = (*PLOT_FILES, EXTRA_PLOT, quality.RELIABILITY_PLOT, quality.ROBUSTNESS_PLOT)
STAGING = ".evaluate.tmp-"  # hidden folders the files are made in (.dvcignore: `.*.tmp*`)
STALE_STAGING_S = 24 * 3600  # one a killed evaluate left: removed by the next, a day on


@dataclass(frozen=True)
class EvalResult:
    """Test-set scores of a model that passed the gate (the full report is layout.metrics)."""

    accuracy: float
    loss: float
    correct: int
    total: int
    min_accuracy: float
    per_class: dict[str, dict[str, float | int]]
    metrics_path: Path

    def summary(self) -> str:
        return (
            f"accuracy {self.correct}/{self.total} = {self.accuracy:.4f} passed the gate "
            f"(min_accuracy {self.min_accuracy}); metrics in {printable(str(self.metrics_path))}"
        )


def score_holdout(
    net: torch.nn.Module,
    params: EvaluateParams,
    plots_dir: Path,
    holdout: extra.Split,
    ingested: str,
) -> dict[str, Any]:
    """The extra holdout's report (total 0 without one; `ingested`: the extra_sha256 of the
    files it was read from); its mistakes go to plots_dir/EXTRA_PLOT."""
    held: dict[str, Any] = {
        "total": len(holdout),
        "holdout_sha256": extra.split_sha256(holdout),
        "extra_sha256": ingested,
        "min_extra_accuracy": params.min_extra_accuracy,
    }
    plot = plots_dir / EXTRA_PLOT
    if not len(holdout):
        return {**held, "accuracy": None, "correct": 0, "passed": True}
    images = torch.from_numpy(holdout.images)
    scores = scoring.score(net, images, torch.from_numpy(holdout.labels), params.batch_size)
    minimum = params.min_extra_accuracy
    plots.plot_misclassified(
        images, scores.actual, scores.predicted, scores.confidence, plot, what="extra holdout"
    )
    return {
        **held,
        "accuracy": scores.accuracy,
        "correct": scores.correct,
        "passed": minimum is None or accuracy_passes(scores.accuracy, minimum),
        "per_class": metrics.per_class(scores.matrix),
    }


def write_plots(images: torch.Tensor, scores: scoring.Scores, history: Path, folder: Path) -> None:
    """Every test-set plot into `folder` (training curves only when a history exists)."""
    answers = (scores.actual, scores.predicted, scores.confidence)
    plots.plot_misclassified(images, *answers, folder / PLOT_FILES[0])
    plots.plot_correct(images, *answers, folder / PLOT_FILES[1])
    plots.plot_confusion(scores.matrix, folder / PLOT_FILES[2])
    plots.plot_training_curves(history, folder / PLOT_FILES[3])


def staged_outputs(staged: Path, staged_plots: Path, layout: Layout) -> list[tuple[Path, Path]]:
    """(staged file, its target) for the plots made in `staged_plots` and the predictions and
    headline made in `staged`."""
    made = [name for name in PLOTS if (staged_plots / name).exists()]
    moves = [(staged_plots / name, layout.plots / name) for name in made]
    return moves + [(staged / t.name, t) for t in (layout.predictions, layout.scores)]


def publish(moves: list[tuple[Path, Path]], layout: Layout) -> None:
    """Move the staged files into place, each written in full beforehand, metrics.json (the
    last of `moves`) last; the plots not made this time are removed."""
    made = {target.name for _, target in moves if target.parent == layout.plots}
    replace_all(moves, [layout.plots / name for name in PLOTS if name not in made])


@contextmanager
def named_as_published(staging: dict[Path, Path]) -> Iterator[None]:
    """An OSError writing a staged file (a full disk) names the file it stands for in its
    target folder (`staging`: staging folder -> target): the staging folder is gone by the time
    the error is read."""
    try:
        yield
    except OSError as exc:
        where = Path(exc.filename) if isinstance(exc.filename, (str, Path)) else None
        for staged, target in staging.items():
            if where is not None and where.is_relative_to(staged):
                named = str(target / where.relative_to(staged))
                raise OSError(exc.errno, exc.strerror, named) from None
        raise


def remove_stale_staging(*folders: Path) -> None:
    """The staging folders that a killed evaluate left in `folders` (a day old or more: none of
    an evaluate running now)."""
    for folder in folders:
        for path in folder.glob(f"{STAGING}*"):
            if path.is_dir() and time.time() - path.stat().st_mtime > STALE_STAGING_S:
                shutil.rmtree(path, ignore_errors=True)


def check_trained(layout: Layout, weights_sha256: str, data_sha256: str, ingested: str) -> None:
    """GateError unless the training record names these weights and the history beside them
    (otherwise a training stopped between its writes, or the files came from elsewhere), the
    dataset it trained on is the one in layout.data_dir (`data_sha256`: a test set it learnt
    from would score it), and the ingested digits it trained with are still those in
    layout.extra_dir (`ingested`, their extra_sha256)."""
    record = read_report(TrainRecord, layout.train_record, "train")
    where = str(layout.train_record)
    made_from(record.state_dict_sha256, weights_sha256, where, "model.pt", "train")
    made_from(record.fingerprint.dataset_sha256, data_sha256, where, "dataset", "train")
    if record.history_sha256 is not None:  # recorded since the history is checked
        history = layout.train_history
        if not history.is_file():
            raise GateError(
                f"{history} is missing but {where} records it: run `mnist-pipeline train`"
            )
        made_from(record.history_sha256, file_sha256(history), where, history.name, "train")
    trained_on = record.fingerprint.extra_sha256
    if trained_on not in (extra.NO_EXTRA_SHA256, ingested):
        raise GateError(
            f"{layout.extra_dir} is not what {where} was trained with (ingested since?): its "
            "holdout could hold digits the model learnt from; run `mnist-pipeline train`"
        )


def written_outputs(moves: list[tuple[Path, Path]], layout: Layout) -> dict[str, str]:
    """SHA-256 of the predictions, the headline and each plot this evaluate wrote (publish
    removes its others), by path under layout.root, read from their staged copies; a file put
    in the plots folder by hand is not one of them."""
    return {t.relative_to(layout.root).as_posix(): file_sha256(s) for s, t in moves}


def evaluate(model: ModelParams, params: EvaluateParams, layout: Layout) -> EvalResult:
    """Score layout.state_dict on the test set; raise GateError below params.min_accuracy."""
    # a clear error if there are none; the hash is of the bytes loaded: the weights described
    net, weights_sha256 = load_model_and_hash(model.arch, layout.state_dict)
    check_targets(
        layout.metrics, layout.predictions, layout.scores, *(layout.plots / n for n in PLOTS)
    )
    remove_stale_staging(layout.reports, layout.plots)
    with unchanging(layout.data_dir, layout.extra_dir):  # no fetch or ingest replaces them
        data_sha256 = dataset_sha256(layout.data_dir)
        ingested = extra.extra_sha256(layout.extra_dir)
        check_trained(layout, weights_sha256, data_sha256, ingested)
        mnist = require_test_images(load_mnist(layout.data_dir), layout.data_dir, "evaluate")
        holdout = extra.read_split(layout.extra_dir, "holdout")
    with ExitStack() as stack:
        staged, staged_plots = (
            Path(stack.enter_context(tempfile.TemporaryDirectory(dir=folder, prefix=STAGING)))
            for folder in (layout.reports, layout.plots)
        )
        stack.enter_context(
            named_as_published({staged: layout.reports, staged_plots: layout.plots})
        )
        test = scoring.score(net, mnist.test_images, mnist.test_labels, params.batch_size)
        held = score_holdout(net, params, staged_plots, holdout, ingested)
        calibration = metrics.calibration(test.confidence, test.predicted == test.actual)
        robustness = quality.robustness_report(
            net,
            mnist.test_images,
            test.actual,
            params.robustness_per_transform,
            params.batch_size,
            layout.robustness_cache,
        )
        fields = {
            "accuracy": test.accuracy,
            "loss": test.loss,
            "correct": test.correct,
            "total": len(test.actual),
            "min_accuracy": params.min_accuracy,
            "passed": accuracy_passes(test.accuracy, params.min_accuracy) and held["passed"],
            "per_class": metrics.per_class(test.matrix),
            "confusion_matrix": test.matrix.tolist(),
            "extra": held,
            "calibration": calibration,
            "robustness": robustness,
            "dataset_sha256": data_sha256,
            "state_dict_sha256": weights_sha256,
            "arch": model.arch,
        }
        full = Metrics.model_validate(fields)
        answers = report.predictions_csv(test.actual, test.predicted, test.confidence)
        write_text(staged / layout.predictions.name, answers)
        write_plots(mnist.test_images, test, layout.train_history, staged_plots)
        quality.write_plots(calibration, robustness, staged_plots)
        write_json(staged / layout.scores.name, report.headline(full))
        moves = staged_outputs(staged, staged_plots, layout)
        full = Metrics.model_validate({**fields, "outputs": written_outputs(moves, layout)})
        full.write(staged / layout.metrics.name)  # the record that every file above was made
        publish([*moves, (staged / layout.metrics.name, layout.metrics)], layout)
    print(report.report_text(full), flush=True)
    enforce_evaluation(full)
    return EvalResult(
        accuracy=test.accuracy,
        loss=full.loss,
        correct=test.correct,
        total=full.total,
        min_accuracy=params.min_accuracy,
        per_class=metrics.per_class(test.matrix),
        metrics_path=layout.metrics,
    )
