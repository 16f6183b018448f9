"""benchmarks/augment_robustness.py on tiny synthetic data: the digits it scores on are the
validation split the train stage held out, its robustness set is drawn from them, its table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks import augment_robustness as bench
from benchmarks.choose_defaults import train_run
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.params import TrainParams
from mnist_pipeline.data.dataset import Mnist, load_mnist
from mnist_pipeline.evaluation.robustness import TRANSFORMS
from mnist_pipeline.model.weights import load_model
from mnist_pipeline.training import loop
from tests.synthetic import digit_images, make_dataset, write_data_dir

TINY = (
    '{"epochs": 1, "batch_size": 32, "val_size": 32, "num_threads": 1, "max_batches_per_epoch": 1}'
)
AUGMENTED = TINY[:-1] + ', "augment": {"enabled": true}}'


@pytest.fixture
def base(tmp_path: Path) -> Layout:
    layout = Layout(tmp_path / "base")
    write_data_dir(layout.data_dir, make_dataset())
    return layout


def test_scores_on_the_split_the_train_stage_held_out(
    base: Layout, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    splits: list[tuple[torch.Tensor, torch.Tensor]] = []
    split = loop.split_indices

    def recording(*args: object) -> tuple[torch.Tensor, torch.Tensor]:
        splits.append(split(*args))
        return splits[-1]

    monkeypatch.setattr(loop, "split_indices", recording)
    rows = bench.run_benchmark([TINY, AUGMENTED], [3, 4], base, 2, tmp_path / "runs")
    # calls: train (config 1, seed 3), the benchmark's split for seed 3, train (1, 4), its split
    # for seed 4, train (2, 3), train (2, 4): the validation set is made once per seed
    assert len(splits) == 6
    trained, recomputed = [splits[i] for i in (0, 2, 4, 5)], [splits[1], splits[3]]
    mnist = load_mnist(base.data_dir)
    for seed, (train_idx, val_idx) in zip([3, 4, 3, 4], trained, strict=True):
        assert torch.equal(recomputed[seed - 3][1], val_idx)
        valset = bench.validation_set(mnist, TrainParams(seed=seed, val_size=32), 2)
        assert torch.equal(valset.indices, val_idx)
        assert not set(valset.indices.tolist()) & set(train_idx.tolist())
        assert torch.equal(valset.labels, mnist.train_labels[val_idx])
        assert torch.equal(valset.images, mnist.train_images[val_idx])  # each with its label
    assert [(r["config"], r["seed"]) for r in rows] == [
        (TINY, 3),
        (TINY, 4),
        (AUGMENTED, 3),
        (AUGMENTED, 4),
    ]
    assert not list((tmp_path / "runs").iterdir())  # each run's project is removed


def test_val_accuracy_is_the_train_stages(base: Layout, tmp_path: Path) -> None:
    root = tmp_path / "run"
    params, result = train_run(json.loads(TINY), 5, base, root)
    valset = bench.validation_set(load_mnist(base.data_dir), params.train, 3)
    scores = bench.score_model(load_model(params.model.arch, Layout(root).state_dict), valset)
    assert list(scores) == ["val", "robustness", *TRANSFORMS]
    assert scores["val"] == pytest.approx(result.val_accuracy, abs=1e-6)
    assert scores["robustness"] == pytest.approx(np.mean([scores[t] for t in TRANSFORMS]))
    assert all(0 <= scores[t] <= 1 for t in TRANSFORMS)


def test_robustness_set_is_drawn_from_validation_digits_only() -> None:
    # Only the validation digits have ink: a digit from anywhere else renders blank, which
    # preprocessing refuses (label -1).
    n, params = 64, TrainParams(seed=7, val_size=16)
    labels = torch.from_numpy(np.arange(n) % 10)
    _, val_idx = loop.split_indices(n, 16, torch.Generator().manual_seed(7))
    images = torch.zeros(n, 28, 28, dtype=torch.uint8)
    images[val_idx] = torch.from_numpy(digit_images(labels[val_idx].numpy(), 1))
    blank = torch.zeros(8, 28, 28, dtype=torch.uint8)
    mnist = Mnist(images, labels, blank, torch.zeros(8, dtype=torch.int64))
    valset = bench.validation_set(mnist, params, 4)
    assert set(valset.robustness) == set(TRANSFORMS)
    val_labels = set(labels[val_idx].tolist())
    for name, (digits, wanted) in valset.robustness.items():
        assert len(wanted) == 4 and (wanted >= 0).all(), name
        assert set(wanted.tolist()) <= val_labels and digits.shape == (4, 28, 28)


def test_validation_set_needs_a_validation_split(base: Layout) -> None:
    mnist = load_mnist(base.data_dir)
    with pytest.raises(ValueError, match="val_size is 0"):
        bench.validation_set(mnist, TrainParams(val_size=0, temperature_scaling=False), 2)


def test_table_has_each_run_and_each_configs_mean() -> None:
    def row(config: str, seed: int, val: float) -> dict:
        return {"config": config, "seed": seed, "threads": 1, "val": val, "robustness": 0.5} | {
            t: 0.5 for t in TRANSFORMS
        }

    table = bench.markdown_table([row("{}", 1, 0.9), row("{}", 2, 0.8), row('{"a": 1}', 1, 0.7)])
    lines = table.splitlines()
    assert lines[0].split(" | ")[3:5] == ["val", "robustness"]
    assert all(t in lines[0] for t in TRANSFORMS)
    assert len(lines) == 2 + 3 + 2
    assert "| `{}` | mean of 2 | 1 | 0.8500 | 0.5000 |" in table
    assert '| `{"a": 1}` | mean of 1 | 1 | 0.7000 |' in table
