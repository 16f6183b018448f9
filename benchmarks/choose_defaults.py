"""Choose training defaults on the validation split: each candidate config, several seeds.

Trains every `--config` (overrides as JSON, e.g. '{"epochs": 30, "augment": {"enabled": true}}';
a "model" key holds model overrides) with each of `--seeds` through the train stage, in this
process, and prints each run's final validation accuracy (train.val_size images held out of
MNIST's training set), the mean and the spread per config, and the seconds of its epochs (not the
stage's reading, setup and writing). The test set
is never read, unless `--test` asks for the report of a config already chosen: then each run is
also evaluated (test accuracy, ECE, robustness) and the median test accuracy printed; with
train.temperature_scaling the test ECE before it is printed too (the logits times the T of the
training record).

    python -m benchmarks.choose_defaults --mirror ../shared/mnist \\
        --config '{}' --config '{"epochs": 30, "augment": {"enabled": true}}'
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import statistics
from pathlib import Path
from typing import Any

import torch

from benchmarks.arguments import add_mirror_option, int_list
from benchmarks.machine import cpu_name
from benchmarks.scratch import scratch_folder
from mnist_pipeline.core.errors import one_line_errors
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.params import Params, parse_params
from mnist_pipeline.data.dataset import load_mnist, normalise
from mnist_pipeline.model.network import predict_logits
from mnist_pipeline.model.weights import load_model
from mnist_pipeline.pipeline import stages
from mnist_pipeline.training import temperature
from mnist_pipeline.training.train import TrainResult


def score_on_test(params: Params, layout: Layout) -> dict[str, Any]:
    """Evaluate the trained run on the test set: accuracy, ECE (and before temperature scaling,
    when the run used it), robustness."""
    measuring = params.evaluate.model_copy(update={"min_accuracy": 0.0})  # scored, not gated
    stages.run("evaluate", params.model_copy(update={"evaluate": measuring}), layout)
    metrics = json.loads(layout.metrics.read_text())
    report: dict[str, Any] = {
        "test": metrics["accuracy"],
        "ece": metrics["calibration"]["ece"],
    }
    robustness = metrics["robustness"] or {"overall": float("nan"), "accuracy": {}}
    report.update(robustness=robustness["overall"], **robustness["accuracy"])
    scaling = json.loads(layout.train_record.read_text()).get("temperature")
    if scaling:
        mnist = load_mnist(layout.data_dir)
        net = load_model(params.model.arch, layout.state_dict)
        logits = predict_logits(net, normalise(mnist.test_images), 1000)
        unscaled = logits * scaling["temperature"]
        report["ece_before"] = temperature.ece(unscaled, mnist.test_labels)
        report["temperature"] = scaling["temperature"]
    return report


def train_run(overrides: dict, seed: int, base: Layout, root: Path) -> tuple[Params, TrainResult]:
    """Train one config (train overrides; a "model" key holds model overrides) with one seed
    through the train stage, in a fresh project under `root` holding `base`'s dataset."""
    params = section_params(overrides, seed)
    shutil.copytree(base.data_dir, Layout(root).data_dir)
    return params, stages.run("train", params, Layout(root))


def section_params(overrides: dict, seed: int) -> Params:
    """The params of one config (train overrides; a "model" key holds model overrides) and
    seed; ParamsError naming a bad key or value."""
    overrides = dict(overrides)
    sections = {"model": overrides.pop("model", {}), "train": {**overrides, "seed": seed}}
    return parse_params(sections)


def run_config(overrides: dict, seed: int, base: Layout, root: Path, test: bool) -> dict[str, Any]:
    """Train one config with one seed in a fresh project under `root`; its scores."""
    params, result = train_run(overrides, seed, base, root)
    with open(Layout(root).train_timings, newline="") as timings:  # the epochs' own seconds
        epochs = sum(float(row["seconds"]) for row in csv.DictReader(timings))
    row: dict[str, Any] = {"val": result.val_accuracy, "seconds": epochs}
    if test:
        row.update(score_on_test(params, Layout(root)))
    shutil.rmtree(root)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_mirror_option(parser)
    parser.add_argument("--config", action="append", required=True, help="overrides, JSON")
    parser.add_argument("--seeds", type=int_list, default="1,2,3")
    parser.add_argument("--test", action="store_true", help="report test scores (not to choose)")
    args = parser.parse_args()
    seeds = args.seeds
    for config in args.config:  # every config checked before hours of training
        try:
            checked = json.loads(config)
        except json.JSONDecodeError as exc:
            parser.error(f"--config {config!r} is not JSON: {exc}")
        if not isinstance(checked, dict):
            parser.error(f"--config {config!r}: expected a JSON object of overrides")
        with one_line_errors():
            for seed in seeds:
                section_params(checked, seed)
    summary = []
    with scratch_folder("choose-defaults-") as scratch:
        base = Layout(scratch / "base")
        with one_line_errors():
            stages.run("fetch", parse_params({"data": {"mirrors": args.mirror}}), base)
        print(f"CPU: {cpu_name()}, torch {torch.__version__}", flush=True)
        for config in args.config:
            rows = []
            for seed in seeds:
                root = scratch / f"run-{len(summary)}-{seed}"
                row = run_config(json.loads(config), seed, base, root, args.test)
                rows.append(row)
                shown = ", ".join(
                    f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()
                )
                print(f"{config} seed {seed}: {shown}", flush=True)
            summary.append((config, rows))
    for config, rows in summary:
        vals = [r["val"] for r in rows if r["val"] is not None]  # none with val_size 0
        scored = (
            f"val {'/'.join(f'{v:.4f}' for v in vals)}, mean {statistics.mean(vals):.4f}, "
            f"spread {max(vals) - min(vals):.4f}"
            if vals
            else "no validation split"
        )
        seconds = statistics.median(r["seconds"] for r in rows)
        line = f"{config}: {scored}, ~{seconds:.0f} s of epochs each"
        if args.test:
            tests = [r["test"] for r in rows]
            line += f"; test {'/'.join(f'{t:.4f}' for t in tests)}, median "
            line += f"{statistics.median(tests):.4f}"
        print(line)


if __name__ == "__main__":
    main()
