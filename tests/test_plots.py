"""Plots: PNGs written atomically, mistakes ordered by confidence, curves from the history."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mnist_pipeline.core.errors import DataError
from mnist_pipeline.evaluation import plots


def png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def only_pngs(folder: Path) -> list[str]:
    """Every file in `folder` (no temp files may be left behind)."""
    return sorted(p.name for p in folder.iterdir())


def fake_predictions(n: int = 50) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8, generator=generator)
    actual = torch.arange(n) % 10
    predicted = actual.clone()
    predicted[::3] = (actual[::3] + 1) % 10  # every third one wrong
    confidence = torch.rand(n, generator=generator) * 0.9 + 0.1
    return images, actual, predicted, confidence


def test_mistakes_most_confident_first() -> None:
    actual = torch.tensor([0, 1, 2, 3, 4])
    predicted = torch.tensor([1, 1, 0, 0, 4])
    confidence = torch.tensor([0.6, 0.99, 0.9, 0.6, 0.95])
    assert plots.mistakes_by_confidence(actual, predicted, confidence).tolist() == [2, 0, 3]


def test_correct_least_confident_first() -> None:
    actual = torch.tensor([0, 1, 2, 3, 4, 5])
    predicted = torch.tensor([0, 1, 0, 3, 4, 5])
    confidence = torch.tensor([0.99, 0.55, 0.9, 0.7, 0.55, 0.999])
    assert plots.correct_by_doubt(actual, predicted, confidence).tolist() == [1, 4, 3, 0, 5]


def test_grids_and_confusion_matrix(tmp_path: Path) -> None:
    images, actual, predicted, confidence = fake_predictions()
    wrong = plots.plot_misclassified(
        images, actual, predicted, confidence, tmp_path / "mis.png", limit=12
    )
    assert wrong == 17
    plots.plot_correct(images, actual, predicted, confidence, tmp_path / "ok.png")
    matrix = torch.eye(10, dtype=torch.int64) * 90 + 1
    plots.plot_confusion(matrix, tmp_path / "cm.png")
    assert only_pngs(tmp_path) == ["cm.png", "mis.png", "ok.png"]
    # Near-square grids: 12 shown mistakes in 4 x 3 cells, 33 correct ones in 6 x 6.
    assert png_size(tmp_path / "mis.png") == (580, 540)
    assert png_size(tmp_path / "ok.png") == (870, 1020)
    assert png_size(tmp_path / "cm.png") == (750, 650)  # figsize 7.5 x 6.5 at 100 dpi


@pytest.mark.parametrize("n", [0, 1])
def test_tiny_grids(tmp_path: Path, n: int) -> None:
    images = torch.zeros(n, 28, 28, dtype=torch.uint8)
    plots.image_grid(images, ["x"] * n, "title", tmp_path / "grid.png")
    assert png_size(tmp_path / "grid.png") == (145, 220)  # one 1.45 x 2.2 inch cell


def test_training_curves_from_history(tmp_path: Path) -> None:
    history = tmp_path / "history.csv"
    out = tmp_path / "plots" / "curves.png"
    assert plots.plot_training_curves(history, out) is False
    history.write_text("epoch,train_loss,train_accuracy,val_loss,val_accuracy,lr,seconds\n")
    assert plots.plot_training_curves(history, out) is False
    history.write_text(
        "epoch,train_loss,train_accuracy,val_loss,val_accuracy,lr,seconds\n"
        "1,0.5,0.8,0.3,0.9,0.001,1.0\n"
        "2,0.2,0.9,,,0.002,1.0\n"  # a missing validation score is allowed
    )
    assert plots.plot_training_curves(history, out) is True
    assert only_pngs(out.parent) == ["curves.png"]
    assert plots.read_history(history)["val_loss"][0] == 0.3
    for text, problem in (
        ("a,b\nx,y\n", "is not a training history \\(ValueError\\)"),
        (b"\xff\xfe\x00garbage", "is not a training history \\(UnicodeDecodeError\\)"),
        ("epoch,lr\n1,0.1\n", "has no train_loss, val_loss, train_accuracy, val_accuracy column"),
    ):
        if isinstance(text, bytes):
            history.write_bytes(text)
        else:
            history.write_text(text)
        with pytest.raises(
            DataError, match=f"{history.name} {problem}: run `mnist-pipeline train`"
        ):
            plots.plot_training_curves(history, out)


def test_log_axis_labels_read_as_plain_numbers() -> None:
    labels = [plots._two_three_five(v, 0) for v in (0.02, 0.03, 0.04, 0.05, 0.07, 0.2, 3.0)]
    assert labels == ["0.02", "0.03", "", "0.05", "", "0.2", "3"]


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """Each figure a plot saves, by file name (still saved), and each grid's (images, titles)."""
    figures: dict[str, object] = {}
    save, grid = plots._save, plots.image_grid

    def keep(fig, path: Path) -> None:
        figures[path.name] = fig
        save(fig, path)

    def keep_grid(images: torch.Tensor, titles: list[str], title: str, path: Path) -> None:
        figures[f"{path.name} grid"] = (images, titles)
        grid(images, titles, title, path)

    monkeypatch.setattr(plots, "_save", keep)
    monkeypatch.setattr(plots, "image_grid", keep_grid)
    return figures


def test_each_plot_draws_its_own_data(tmp_path: Path, drawn: dict) -> None:
    images, actual, predicted, confidence = fake_predictions()
    plots.plot_misclassified(images, actual, predicted, confidence, tmp_path / "mis.png", limit=5)
    shown, titles = drawn["mis.png grid"]
    order = plots.mistakes_by_confidence(actual, predicted, confidence)[:5].tolist()
    assert torch.equal(shown, images[order])  # the mistakes' own pixels, in that order
    for i, caption in zip(order, titles, strict=True):
        assert caption.startswith(f"#{i}: true {actual[i]}\npred {predicted[i]} ("), caption

    matrix = torch.zeros(10, 10, dtype=torch.int64)
    matrix[2, 7] = 30  # thirty 2s taken for 7s: row "true", column "predicted"
    plots.plot_confusion(matrix, tmp_path / "cm.png")
    ax = drawn["cm.png"].axes[0]
    cells = ax.images[0].get_array()
    assert cells[2, 7] == pytest.approx(np.log1p(30)) and cells[7, 2] == 0
    assert (ax.get_ylabel(), ax.get_xlabel()) == ("true label", "predicted label")

    scores = {"paper": 0.9, "blur": 0.5, "ruled": 0.1}
    plots.plot_robustness(scores, tmp_path / "robust.png")
    ax = drawn["robust.png"].axes[0]
    names = [label.get_text() for label in ax.get_yticklabels()]
    assert sorted(names) == sorted(scores)
    widths = [bar.get_width() for bar in ax.patches]
    assert widths == [scores[name] for name in names]  # each bar beside its own name
    assert [t.get_text() for t in ax.texts] == [f"{scores[name]:.1%}" for name in names]

    history = tmp_path / "history.csv"
    history.write_text(
        "epoch,train_loss,train_accuracy,val_loss,val_accuracy,lr,seconds\n"
        "1,0.5,0.8,0.3,0.9,0.001,1.0\n2,0.2,0.95,0.25,0.97,0.002,1.0\n"
    )
    plots.plot_training_curves(history, tmp_path / "curves.png")
    loss, accuracy, lr = drawn["curves.png"].axes[:3]
    assert [list(line.get_ydata()) for line in loss.lines] == [[0.5, 0.2], [0.3, 0.25]]
    assert [list(line.get_ydata()) for line in accuracy.lines] == [[0.8, 0.95], [0.9, 0.97]]
    assert [list(line.get_ydata()) for line in lr.lines] == [[0.001, 0.002]]

    table = [
        {"low": 0.6, "high": 0.8, "confidence": 0.7, "accuracy": 0.5, "count": 4},
        {"low": 0.8, "high": 1.0, "confidence": 0.9, "accuracy": 0.95, "count": 20},
    ]
    plots.plot_reliability({"ece": 0.1, "table": table}, tmp_path / "reliability.png")
    ax = drawn["reliability.png"].axes[0]
    bars = [(bar.get_x(), bar.get_height()) for bar in ax.patches]
    assert bars == [(pytest.approx(0.6), 0.5), (pytest.approx(0.8), 0.95)]
    assert "ECE 0.1000" in ax.get_title()
