"""The training progress bar (core/progress.py): the figures it shows."""

from __future__ import annotations

import re

import pytest
from rich.progress import Progress

from mnist_pipeline.core.progress import UPDATE_EVERY, EpochReporter


def shown_figures(monkeypatch: pytest.MonkeyPatch, batches: int) -> list[dict]:
    """The loss and accuracy the bar was given, in order, over an epoch of `batches` batches."""
    shown: list[dict] = []
    update = Progress.update

    def recording(self: Progress, task, **fields) -> None:
        if "loss" in fields:
            shown.append({"loss": fields["loss"], "acc": fields["acc"]})
        update(self, task, **fields)

    monkeypatch.setattr(Progress, "update", recording)
    reporter = EpochReporter(epochs=1, images_per_epoch=32 * batches, live=True)
    with reporter.epoch(1) as on_batch:
        assert on_batch is not None
        for i in range(batches):
            on_batch(32, 1.0 / (i + 1), i / batches)
    return shown


def test_an_epoch_shorter_than_the_refresh_interval_shows_its_figures(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Refreshed every UPDATE_EVERY batches only, an epoch of fewer showed loss 0, acc 0."""
    shown = shown_figures(monkeypatch, 3)
    assert shown[-1] == {"loss": 1.0 / 3, "acc": 2 / 3}  # the last batch's


def test_a_long_epoch_refreshes_every_few_batches_not_every_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    batches = 3 * UPDATE_EVERY + 1
    shown = shown_figures(monkeypatch, batches)
    assert len(shown) == 1 + 3 + 1  # the first, every UPDATE_EVERY-th, the last
    assert shown[-1]["loss"] == 1.0 / batches


def test_the_epoch_line_puts_each_figure_in_its_place(capsys: pytest.CaptureFixture[str]) -> None:
    row = {
        "epoch": 3.0,
        "train_loss": 0.12344,
        "train_accuracy": 0.95,
        "val_loss": 0.0678,
        "val_accuracy": 0.9812,
        "lr": 0.00123,
        "seconds": 2.46,
    }
    reporter = EpochReporter(epochs=4, images_per_epoch=10, live=False)
    with reporter.epoch(3) as on_batch:
        assert on_batch is None  # not a terminal: no bar, only the line
    reporter.done(row, 12_000)
    line = capsys.readouterr().err.strip()
    pattern = (
        r"epoch 3: train loss 0\.1234 acc 0\.9500 \| val loss 0\.0678 acc 0\.9812 \| "
        r"lr 1\.23e-03 \| 2\.5 s, ([\d,]+) img/s"
    )
    found = re.fullmatch(pattern, line)
    assert found, line
    assert int(found.group(1).replace(",", "")) > 12_000  # 12,000 images in well under 1 s
