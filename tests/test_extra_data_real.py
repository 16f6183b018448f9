"""End to end on real MNIST: digits users add teach the model a shifted distribution.

From the validation split (never the test set) a few hundred digits rotated by 30-45 degrees,
drawn dark on light paper at varied sizes and positions (benchmarks/shifted_digits.py), go
through `mnist-pipeline data add`; a short retraining on MNIST + them must get clearly better on
a disjoint set of such digits while MNIST test accuracy stays within 0.1 points of the same
training without them. (`python -m benchmarks.extra_data_experiment` is the full-length version
whose figures the README reports.)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from benchmarks.extra_data_experiment import accuracy, write_pngs
from benchmarks.shifted_digits import shifted_set
from mnist_pipeline.cli.app import app
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.params import load_params
from mnist_pipeline.data.dataset import load_mnist
from mnist_pipeline.pipeline import stages
from mnist_pipeline.training.loop import split_indices

pytestmark = pytest.mark.e2e
TRAIN = {"epochs": 3, "num_threads": 2, "precision": "fp32"}  # fp32: the same on every CPU
ADDED, EVALUATED = 300, 500


def project(root: Path, mirror: Path, extra_weight: int) -> Path:
    root.mkdir()
    params = {
        "data": {"mirrors": [str(mirror)]},
        "train": {**TRAIN, "extra_weight": extra_weight},
        "evaluate": {"min_accuracy": 0.95},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def run_stages(root: Path, *names: str) -> None:
    params = load_params(root / "params.yaml")
    for name in names:
        stages.run(name, params, Layout(root))


def test_added_rotated_digits_are_learnt_without_losing_mnist(
    tmp_path: Path, real_mirror: Path
) -> None:
    baseline = project(tmp_path / "baseline", real_mirror, extra_weight=4)
    run_stages(baseline, "fetch", "ingest", "train", "evaluate")
    mnist = load_mnist(Layout(baseline).data_dir)
    defaults = load_params(baseline / "params.yaml").train
    _, val_idx = split_indices(
        len(mnist.train_labels), defaults.val_size, torch.Generator().manual_seed(defaults.seed)
    )
    digits = mnist.train_images.numpy(), mnist.train_labels.numpy()
    added = shifted_set(*(d[val_idx[:ADDED]] for d in digits), seed=1, style="rotated")
    held = val_idx[ADDED : ADDED + EVALUATED]
    evaluated = shifted_set(*(d[held] for d in digits), seed=3, style="rotated")

    learner = project(tmp_path / "learner", real_mirror, extra_weight=4)
    runner = CliRunner()
    for label, files in sorted(write_pngs(tmp_path / "pngs", added).items()):
        args = ["--root", str(learner), "data", "add", "--label", str(label), *map(str, files)]
        done = runner.invoke(app, args)
        assert done.exit_code == 0, done.output
    run_stages(learner, "fetch", "ingest", "train")
    # The robustness set the baseline rendered (same test set, seed and size: the same key,
    # verified when read), so the learner's evaluate does not render it again.
    shutil.copytree(Layout(baseline).robustness_cache, Layout(learner).robustness_cache)
    run_stages(learner, "evaluate")

    before = json.loads(Layout(baseline).metrics.read_text())
    after = json.loads(Layout(learner).metrics.read_text())
    shifted_before = accuracy(Layout(baseline).state_dict, evaluated)
    shifted_after = accuracy(Layout(learner).state_dict, evaluated)
    print(
        f"rotated digits {shifted_before:.4f} -> {shifted_after:.4f}; "
        f"MNIST test {before['accuracy']:.4f} -> {after['accuracy']:.4f}"
    )
    assert shifted_after >= shifted_before + 0.05  # clearly learnt (here: +9 points)
    assert after["accuracy"] >= before["accuracy"] - 0.001  # MNIST within 0.1 points
    report = json.loads(Layout(learner).ingest_report.read_text())
    assert sum(report["counts"].values()) == ADDED and report["rejected"] == {}
    assert after["extra"]["total"] == report["counts"]["holdout"] > 0
