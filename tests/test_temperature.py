"""Temperature scaling: the fit recovers a known temperature, folding divides the logits exactly,
and the train stage records it and ships calibrated weights with the same predictions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mnist_pipeline.core.errors import ParamsError
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.params import ModelParams, TrainParams, parse_params
from mnist_pipeline.data.dataset import load_mnist, normalise
from mnist_pipeline.model.network import build_model, predict_logits
from mnist_pipeline.model.weights import load_model
from mnist_pipeline.training import temperature
from mnist_pipeline.training.loop import split_indices
from mnist_pipeline.training.train import train
from tests.synthetic import make_dataset, write_data_dir


def sampled(n: int, scale: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits whose labels are drawn from softmax(logits / scale): calibrated at T = scale."""
    generator = torch.Generator().manual_seed(seed)
    calibrated = 3 * torch.randn(n, 10, generator=generator)
    labels = torch.multinomial(torch.softmax(calibrated, 1), 1, generator=generator).squeeze(1)
    return calibrated * scale, labels


@pytest.mark.parametrize("scale", [0.5, 1.0, 3.0])
def test_fit_recovers_the_temperature_labels_were_drawn_at(scale: float) -> None:
    logits, labels = sampled(20_000, scale)
    fitted = temperature.fit_temperature(logits, labels)
    assert fitted == pytest.approx(scale, rel=0.05)
    best = temperature.nll(logits, labels, fitted)
    assert best <= temperature.nll(logits, labels, fitted * 1.05)
    assert best <= temperature.nll(logits, labels, fitted / 1.05)


def test_fitting_an_overconfident_model_lowers_its_ece() -> None:
    logits, labels = sampled(20_000, 3.0)
    fitted = temperature.fit_temperature(logits, labels)
    assert temperature.ece(logits, labels, fitted) < temperature.ece(logits, labels) / 3


def test_fit_needs_examples() -> None:
    with pytest.raises(ValueError, match="at least one"):
        temperature.fit_temperature(torch.zeros(0, 10), torch.zeros(0, dtype=torch.long))


@pytest.mark.parametrize("arch", ["classic", "wide"])
def test_folding_divides_the_logits(arch: str) -> None:
    torch.manual_seed(0)
    model = build_model(arch).eval()
    images = torch.randn(16, 1, 28, 28)
    before = predict_logits(model, images, 16)
    temperature.fold_temperature(model, 2.5)
    after = predict_logits(model, images, 16)
    torch.testing.assert_close(after, before / 2.5)
    assert torch.equal(after.argmax(1), before.argmax(1))


def test_fold_refuses_a_non_positive_temperature() -> None:
    with pytest.raises(ValueError, match="temperature must be > 0"):
        temperature.fold_temperature(build_model("classic"), 0.0)


def test_calibrate_reports_validation_scores_and_folds() -> None:
    torch.manual_seed(0)
    model = build_model("classic")
    images, labels = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    before = predict_logits(model, images, 64)
    report = temperature.calibrate(model, images, labels, batch_size=32)
    t = report["temperature"]
    assert report["folded"] and report["val_nll_after"] < report["val_nll_before"]
    assert report["val_nll_before"] == pytest.approx(temperature.nll(before, labels, 1.0))
    assert report["val_nll_after"] == pytest.approx(temperature.nll(before, labels, t))
    assert report["val_ece_before"] == pytest.approx(temperature.ece(before, labels))
    assert report["val_ece_after"] == pytest.approx(temperature.ece(before, labels, t))
    assert report["val_ece_after"] != report["val_ece_before"] and report["val_images"] == 64
    torch.testing.assert_close(predict_logits(model, images, 64), before / t)


def test_a_validation_split_without_mistakes_is_not_folded() -> None:
    """Every image right: the NLL falls towards T = 0, so there is no temperature to trust."""
    torch.manual_seed(0)
    model = build_model("classic")
    images = torch.randn(16, 1, 28, 28)
    before = predict_logits(model, images, 16)
    report = temperature.calibrate(model, images, before.argmax(1), batch_size=16)
    assert report["fitted"] == pytest.approx(temperature.T_MIN, rel=0.01)
    assert not report["folded"] and report["temperature"] == 1.0
    assert torch.equal(predict_logits(model, images, 16), before)
    assert "temperature scaling skipped" in temperature.summary(report)
    assert "gets (almost) all of the 16 validation images right" in temperature.summary(report)


def test_a_model_no_better_than_chance_is_not_folded_and_said_so() -> None:
    """Confident answers that are all wrong (a diverged run): the NLL falls towards the largest
    temperature, and the log says to look at training, not that the model is always right."""
    torch.manual_seed(0)
    model = build_model("classic")
    images = torch.randn(16, 1, 28, 28)
    before = predict_logits(model, images, 16)
    wrong = (before.argmax(1) + 1) % 10
    report = temperature.calibrate(model, images, wrong, batch_size=16)
    assert report["fitted"] == pytest.approx(temperature.T_MAX, rel=0.01) and not report["folded"]
    said = temperature.summary(report)
    assert "confident answers are mostly wrong" in said and "right" not in said


def test_temperature_scaling_needs_a_validation_split() -> None:
    with pytest.raises(ParamsError, match="temperature_scaling is on but val_size is 0"):
        parse_params({"train": {"temperature_scaling": True, "val_size": 0}})


def test_train_folds_the_fitted_temperature_into_model_pt(tmp_path: Path) -> None:
    """Same seed with and without scaling: identical training, then logits divided by the T the
    training record names; the predictions do not change."""
    dataset = make_dataset()
    tiny = {"epochs": 1, "batch_size": 32, "val_size": 32, "num_threads": 1, "precision": "fp32"}
    layouts = {}
    for scaled in (False, True):
        layout = Layout(tmp_path / str(scaled))
        write_data_dir(layout.data_dir, dataset)
        params = TrainParams.model_validate({**tiny, "temperature_scaling": scaled})
        train(ModelParams(), params, layout)
        layouts[scaled] = layout
    record = json.loads(layouts[True].train_record.read_text())["temperature"]
    assert json.loads(layouts[False].train_record.read_text())["temperature"] is None
    assert record["folded"] and record["temperature"] != 1.0
    assert record["val_nll_after"] <= record["val_nll_before"]
    # fitted on the validation split (train.seed's), with the weights as trained
    mnist = load_mnist(layouts[True].data_dir)
    _, val = split_indices(
        len(mnist.train_labels), 32, torch.Generator().manual_seed(TrainParams().seed)
    )
    unscaled = load_model("classic", layouts[False].state_dict)
    logits = predict_logits(unscaled, normalise(mnist.train_images)[val], 32)
    assert record["val_images"] == 32  # val: not all right
    fitted = temperature.fit_temperature(logits, mnist.train_labels[val])
    assert record["fitted"] == pytest.approx(fitted)
    images = torch.randn(20, 1, 28, 28, generator=torch.Generator().manual_seed(TrainParams().seed))
    plain = predict_logits(unscaled, images, 20)
    scaled = predict_logits(load_model("classic", layouts[True].state_dict), images, 20)
    torch.testing.assert_close(scaled, plain / record["temperature"])
    assert torch.equal(scaled.argmax(1), plain.argmax(1))
