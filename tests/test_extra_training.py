"""Training and evaluation with the labelled digits users added (the ingested extra data)."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from mnist_pipeline.core.atomic import folder_lock
from mnist_pipeline.core.errors import DataError, GateError
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.params import IngestParams, Params
from mnist_pipeline.core.reports import Metrics, read_report
from mnist_pipeline.data.manifest import file_sha256
from mnist_pipeline.evaluation import gate
from mnist_pipeline.evaluation.evaluate import EXTRA_PLOT, evaluate
from mnist_pipeline.inbox import extra
from mnist_pipeline.inbox import store as inbox_store
from mnist_pipeline.inbox.ingest import _ingest, ingest, not_ingested
from mnist_pipeline.training.loop import add_extra
from mnist_pipeline.training.train import train
from tests.test_cli_errors import cli
from tests.test_ingest import fill_inbox


def test_extra_images_are_appended_and_oversampled() -> None:
    images, labels = torch.zeros(5, 1, 28, 28), torch.arange(5)
    extra_images, extra_labels = torch.ones(2, 1, 28, 28), torch.tensor([7, 8])
    all_images, all_labels, idx = add_extra(
        images, labels, torch.tensor([0, 2, 4]), extra_images, extra_labels, weight=3
    )
    assert all_labels.tolist() == [0, 1, 2, 3, 4, 7, 8]
    assert torch.equal(all_images[5:], extra_images)
    assert sorted(idx.tolist()) == [0, 2, 4, 5, 5, 5, 6, 6, 6]


@pytest.fixture
def with_inbox(tmp_path: Path, tiny_data_dir: Path) -> Layout:
    """A project root with the tiny dataset and 40 ingested labelled digits (half held out)."""
    layout = Layout(tmp_path)
    fill_inbox(layout, range(40))
    ingest(IngestParams(holdout_percent=50), layout)
    return layout


def test_training_uses_the_extra_data_and_records_its_identity(
    with_inbox: Layout, tiny_params: Params, capsys: pytest.CaptureFixture[str]
) -> None:
    layout = with_inbox
    train(tiny_params.model, tiny_params.train, layout)
    added = len(extra.read_split(layout.extra_dir, "train"))
    assert f"adding {added} labelled digit(s)" in capsys.readouterr().err
    record = json.loads(layout.train_record.read_text())
    assert record["fingerprint"]["extra_sha256"] == extra.extra_sha256(layout.extra_dir)
    with_extra = file_sha256(layout.state_dict)
    # train.extra_weight reaches training: seen once an epoch instead, other weights
    once = tiny_params.train.model_copy(update={"extra_weight": 1})
    assert tiny_params.train.extra_weight != 1
    train(tiny_params.model, once, layout)
    assert "each seen 1 times an epoch" in capsys.readouterr().err
    assert file_sha256(layout.state_dict) != with_extra
    # The same run without the extra data trains other weights and has another fingerprint.
    for name in extra.data_files():
        (layout.extra_dir / name).unlink()
    (layout.extra_dir / extra.MANIFEST_FILE).unlink()
    (layout.extra_dir / extra.CHECKSUMS_FILE).unlink()
    layout.extra_dir.rmdir()
    train(tiny_params.model, tiny_params.train, layout)
    without = json.loads(layout.train_record.read_text())["fingerprint"]
    assert without["extra_sha256"] == extra.NO_EXTRA_SHA256
    assert without["sha256"] != record["fingerprint"]["sha256"]
    assert file_sha256(layout.state_dict) != with_extra


def test_evaluation_scores_the_extra_holdout_and_can_gate_on_it(
    with_inbox: Layout, tiny_params: Params
) -> None:
    layout = with_inbox
    train(tiny_params.model, tiny_params.train, layout)
    evaluate(tiny_params.model, tiny_params.evaluate, layout)  # no extra gate: reported only
    held = json.loads(layout.metrics.read_text())["extra"]
    holdout = extra.read_split(layout.extra_dir, "holdout")
    assert held["total"] == len(holdout) > 0
    assert held["holdout_sha256"] == extra.split_sha256(holdout)
    assert held["accuracy"] == held["correct"] / held["total"]
    assert sum(c["support"] for c in held["per_class"].values()) == held["total"]
    assert (layout.plots / EXTRA_PLOT).is_file()
    scores = json.loads(layout.scores.read_text())
    assert scores["extra_acc"] == held["accuracy"]
    assert held["accuracy"] < 1.0  # random scribbles: a one-epoch model gets most wrong
    strict = tiny_params.evaluate.model_copy(update={"min_extra_accuracy": 1.0})
    with pytest.raises(GateError, match=r"extra holdout accuracy .* evaluate.min_extra_accuracy=1"):
        evaluate(tiny_params.model, strict, layout)
    report = json.loads(layout.metrics.read_text())
    assert report["passed"] is False and report["extra"]["passed"] is False
    assert report["accuracy"] >= tiny_params.evaluate.min_accuracy  # MNIST alone would pass
    # Registration re-reads the verdict with the gate configured now: a stricter one refuses.
    metrics = read_report(Metrics, layout.metrics, "evaluate")
    with pytest.raises(GateError, match="extra holdout accuracy"):
        gate.extra_passed(metrics, "metrics.json", held["accuracy"] + 0.01)
    gate.extra_passed(metrics, "metrics.json", held["accuracy"])
    without = metrics.model_copy(update={"extra": metrics.extra.model_copy(update={"total": 0})})
    gate.extra_passed(without, "metrics.json", 1.0)  # no holdout: nothing to judge


def test_digits_ingested_after_training_are_not_scored_as_its_holdout(
    with_inbox: Layout, tiny_params: Params
) -> None:
    """A larger holdout share after training moves digits it learnt from into the holdout."""
    layout = with_inbox
    train(tiny_params.model, tiny_params.train, layout)
    ingest(IngestParams(holdout_percent=80), layout)
    with pytest.raises(GateError, match=r"is not what .*model.json was trained with .* train`"):
        evaluate(tiny_params.model, tiny_params.evaluate, layout)
    assert not layout.metrics.exists()
    ingest(IngestParams(holdout_percent=50), layout)  # the same digits again: scored
    evaluate(tiny_params.model, tiny_params.evaluate, layout)
    assert json.loads(layout.metrics.read_text())["extra"]["total"] > 0


def test_without_a_holdout_there_is_no_extra_score_or_stale_plot(
    tmp_path: Path, tiny_data_dir: Path, tiny_params: Params
) -> None:
    layout = Layout(tmp_path)
    train(tiny_params.model, tiny_params.train, layout)
    layout.plots.mkdir(parents=True)
    (layout.plots / EXTRA_PLOT).write_bytes(b"stale")
    evaluate(tiny_params.model, tiny_params.evaluate, layout)
    held = json.loads(layout.metrics.read_text())["extra"]
    assert held["total"] == 0 and held["accuracy"] is None and held["passed"] is True
    assert not (layout.plots / EXTRA_PLOT).exists()


def while_an_ingest_writes(layout: Layout, stage: Callable[[], object]) -> object:
    """`stage` started while ingest's lock is held, as an ingest holds it while it replaces its
    files; 2 s later (long enough for a stage that does not wait to have read the old files)
    new digits are ingested under that lock, which is then released. What `stage` returned,
    or the exception it raised."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(stage())
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)

    writing = folder_lock(layout.extra_dir)
    writing.acquire()
    worker = threading.Thread(target=run)
    try:
        worker.start()
        time.sleep(2)
        fill_inbox(layout, range(40, 60))
        _ingest(IngestParams(holdout_percent=50), layout)  # ingest's writes, under its lock
    finally:
        writing.release()
    worker.join(120)
    assert not worker.is_alive() and len(outcome) == 1
    return outcome[0]


def test_training_reads_the_ingested_digits_once_no_ingest_is_writing_them(
    with_inbox: Layout, tiny_params: Params, capsys: pytest.CaptureFixture[str]
) -> None:
    """An `ingest` beside `dvc repro`'s train: the train stage waits for it and records the
    identity of the very digits it trained on (not the old ones' hash over new arrays)."""
    layout = with_inbox
    old = extra.extra_sha256(layout.extra_dir)
    done = while_an_ingest_writes(
        layout, lambda: train(tiny_params.model, tiny_params.train, layout)
    )
    assert not isinstance(done, BaseException), done
    new = extra.extra_sha256(layout.extra_dir)
    assert new != old
    record = json.loads(layout.train_record.read_text())
    assert record["fingerprint"]["extra_sha256"] == new
    added = len(extra.read_split(layout.extra_dir, "train"))
    assert f"adding {added} labelled digit(s)" in capsys.readouterr().err


def test_evaluation_reads_nothing_while_an_ingest_writes_and_then_sees_its_digits(
    with_inbox: Layout, tiny_params: Params
) -> None:
    """An `ingest` beside `dvc repro`'s evaluate: evaluate waits for it, then finds digits the
    model was not trained with and refuses to score them as its holdout."""
    layout = with_inbox
    train(tiny_params.model, tiny_params.train, layout)
    failed = while_an_ingest_writes(
        layout, lambda: evaluate(tiny_params.model, tiny_params.evaluate, layout)
    )
    assert isinstance(failed, GateError), failed
    assert "is not what" in str(failed) and "ingested since?" in str(failed)
    assert not layout.metrics.exists()  # nothing scored, nothing written


def test_a_dataset_whose_lock_files_this_user_cannot_write_is_trained_and_scored_on(
    with_inbox: Layout, tiny_params: Params, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lock files another user made, or a read-only data/: train and evaluate hold them shared
    through read-only descriptors (tests/test_unchanging.py) and run as usual."""
    from mnist_pipeline.core import atomic
    from tests.test_unchanging import NotWritable

    layout = with_inbox  # its ingest made data/.ingested.lock; data/.mnist.lock is made here
    (layout.data_dir.parent / ".mnist.lock").touch()
    assert (layout.data_dir.parent / ".ingested.lock").is_file()
    monkeypatch.setattr(atomic, "folder_lock", NotWritable)
    train(tiny_params.model, tiny_params.train, layout)
    evaluate(tiny_params.model, tiny_params.evaluate, layout)
    assert json.loads(layout.metrics.read_text())["extra"]["total"] > 0


def test_train_says_when_the_inbox_holds_digits_no_ingest_took(
    tiny_workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`data add` then `train` trains without the new digits: it says so, and what to run."""
    layout = Layout(tiny_workdir)
    assert cli(tiny_workdir, "fetch") == 0
    fill_inbox(layout, range(4))
    capsys.readouterr()
    assert cli(tiny_workdir, "train") == 0
    said = capsys.readouterr().err
    assert f"warning: {layout.inbox} holds 4 labelled digit(s) and no ingest took them" in said
    assert "run `mnist-pipeline ingest` first to train on them" in said
    assert cli(tiny_workdir, "ingest") == 0 and cli(tiny_workdir, "train") == 0
    assert "warning" not in capsys.readouterr().err  # what train reads is the inbox as it is
    fill_inbox(layout, range(4, 6))
    assert cli(tiny_workdir, "train") == 0
    said = capsys.readouterr().err
    assert f"warning: {layout.inbox} has changed since the last ingest" in said


def test_an_ingest_output_that_is_a_file_is_refused_not_read_as_no_digits(
    with_inbox: Layout, tiny_params: Params
) -> None:
    shutil.rmtree(with_inbox.extra_dir)
    with_inbox.extra_dir.write_text("x")
    with pytest.raises(DataError, match=r"data/ingested: a file, where `mnist-pipeline ingest`"):
        train(tiny_params.model, tiny_params.train, with_inbox)


def test_the_inbox_is_compared_as_ingest_counts_it(tmp_path: Path) -> None:
    """A file over the size limit (refused by ingest, outside what it took) is no change; a
    report of an older version, or a folder with no inbox (a run folder), says nothing."""
    layout = Layout(tmp_path)
    fill_inbox(layout, range(3))
    huge = layout.inbox / "2" / "huge.png"
    with huge.open("wb") as out:
        out.truncate(inbox_store.MAX_FILE_BYTES + 1)
    ingest(IngestParams(), layout)
    assert not_ingested(layout) is None
    fill_inbox(layout, range(3, 4))
    assert "has changed since the last ingest" in (not_ingested(layout) or "")
    older = json.loads(layout.ingest_report.read_text())
    del older["inbox_sha256"]
    layout.ingest_report.write_text(json.dumps(older))
    assert not_ingested(layout) is None
    assert not_ingested(Layout(tmp_path / "runs" / "r1")) is None


def test_a_file_over_the_size_limit_is_refused_for_its_size(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    fill_inbox(layout, range(3))
    huge = layout.inbox / "2" / "huge.png"
    with huge.open("wb") as out:
        out.truncate(inbox_store.MAX_FILE_BYTES + 1)
    result = ingest(IngestParams(), layout)
    assert "10,000,001 bytes, over the limit of 10,000,000" in result.rejected["2/huge.png"]


def test_relabelling_a_file_by_hand_is_a_change_of_the_inbox(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    fill_inbox(layout, range(3))  # labels 0, 1, 2
    ingest(IngestParams(), layout)
    assert not_ingested(layout) is None
    (moved,) = (layout.inbox / "1").iterdir()
    (layout.inbox / "7").mkdir()
    moved.rename(layout.inbox / "7" / moved.name)  # the same bytes, now labelled 7
    assert "has changed since the last ingest" in (not_ingested(layout) or "")
