"""Which training augmentation helps robustness? Validation accuracy and validation robustness.

Trains every `--config` (train overrides as JSON, e.g. '{"augment": {"enabled": true}}'; a
"model" key holds model overrides, as in benchmarks/choose_defaults.py) with each of `--seeds`
through the train stage, in this process, then scores each model on

- the validation split the train stage held out (`loop.split_indices` recomputed with the run's
  seed and train.val_size: the same digits, never trained on), and
- a robustness set rendered from those validation digits (`robustness.robustness_set`, every
  transformation of TRANSFORMS, `--per-transform` digits each): per transformation and overall
  (their mean). The set does not depend on the model: it is rendered once per seed (and
  val_size) and shared by every config.

It prints a Markdown table (config, seed, training threads, validation accuracy, overall
validation robustness, each transformation's accuracy), then each config's mean over the seeds,
with the CPU, the date and the threads. The test set is never read: choosing an augmentation on
this table is choosing on validation only (the evaluate stage's robustness report, rendered from
the test set, is the report of a choice already made).

    python -m benchmarks.augment_robustness --mirror ../shared/mnist \\
        --config '{}' --config '{"augment": {"enabled": true}}' --seeds 1,2
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks.arguments import add_mirror_option
from benchmarks.choose_defaults import train_run
from benchmarks.machine import cpu_name
from benchmarks.scratch import clean_up_on_sigterm
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.params import TrainParams, parse_params
from mnist_pipeline.data.dataset import Mnist, load_mnist
from mnist_pipeline.evaluation import quality, scoring
from mnist_pipeline.evaluation.robustness import TRANSFORMS, robustness_set
from mnist_pipeline.model.weights import load_model
from mnist_pipeline.pipeline import stages
from mnist_pipeline.training import loop

BATCH = 1000
COLUMNS = ("val", "robustness", *TRANSFORMS)


@dataclass(frozen=True)
class ValidationSet:
    """The validation digits of one (seed, val_size) and the robustness set drawn from them."""

    indices: torch.Tensor  # into MNIST's training split
    images: torch.Tensor  # uint8 [N, 28, 28]
    labels: torch.Tensor  # [N]
    robustness: dict[str, tuple[np.ndarray, np.ndarray]]  # robustness.robustness_set's result


def validation_set(mnist: Mnist, params: TrainParams, per_transform: int) -> ValidationSet:
    """The split the train stage holds out with `params` (its seed and val_size), and a
    robustness set of `per_transform` of those digits per transformation (seeded by the run)."""
    if params.val_size == 0:
        raise ValueError("train.val_size is 0: there is no validation split to score on")
    generator = torch.Generator().manual_seed(params.seed)
    _, indices = loop.split_indices(len(mnist.train_labels), params.val_size, generator)
    images, labels = mnist.train_images[indices], mnist.train_labels[indices]
    sets = robustness_set(images.numpy(), labels.numpy(), per_transform, params.seed)
    return ValidationSet(indices, images, labels, sets)


def score_model(net: torch.nn.Module, valset: ValidationSet) -> dict[str, float]:
    """`net`'s validation accuracy (`val`), overall validation robustness (`robustness`, the mean
    over transformations) and its accuracy on each transformation, in COLUMNS order."""
    val = scoring.score(net, valset.images, valset.labels, BATCH).accuracy
    report = quality.robustness_scores(net, valset.robustness, BATCH)
    return {"val": val, "robustness": report["overall"], **report["accuracy"]}


def run_benchmark(
    configs: list[str], seeds: list[int], base: Layout, per_transform: int, scratch: Path
) -> list[dict]:
    """One row per (config, seed): config, seed, threads and the scores (`score_model`); each
    run trains in its own project under `scratch`, removed once scored."""
    mnist = load_mnist(base.data_dir)
    valsets: dict[tuple[int, int], ValidationSet] = {}
    rows = []
    for i, config in enumerate(configs):
        for seed in seeds:
            root = scratch / f"run-{i}-{seed}"
            params, _ = train_run(json.loads(config), seed, base, root)
            key = (params.train.seed, params.train.val_size)
            if key not in valsets:
                valsets[key] = validation_set(mnist, params.train, per_transform)
            net = load_model(params.model.arch, Layout(root).state_dict)
            row = {"config": config, "seed": seed, "threads": params.train.num_threads}
            rows.append({**row, **score_model(net, valsets[key])})
            shutil.rmtree(root)
            scores = rows[-1]
            print(
                f"{config} seed {seed}: val {scores['val']:.4f}, "
                f"robustness {scores['robustness']:.4f}",
                flush=True,
            )
    return rows


def markdown_table(rows: list[dict]) -> str:
    """The rows, then each config's mean over its seeds, as one Markdown table."""
    lines = [
        "| config | seed | threads | " + " | ".join(COLUMNS) + " |",
        "|---|---|---|" + "---|" * len(COLUMNS),
    ]

    def line(config: str, seed: str, threads: object, values: list[float]) -> str:
        cells = " | ".join(f"{v:.4f}" for v in values)
        return f"| `{config}` | {seed} | {threads} | {cells} |"

    for row in rows:
        values = [row[c] for c in COLUMNS]
        lines.append(line(row["config"], str(row["seed"]), row["threads"], values))
    for config in dict.fromkeys(row["config"] for row in rows):
        runs = [row for row in rows if row["config"] == config]
        means = [statistics.mean(row[c] for row in runs) for c in COLUMNS]
        lines.append(line(config, f"mean of {len(runs)}", runs[0]["threads"], means))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_mirror_option(parser)
    parser.add_argument("--config", action="append", required=True, help="overrides, JSON")
    parser.add_argument("--seeds", default="1")
    parser.add_argument("--per-transform", type=int, default=200)
    args = parser.parse_args()
    for config in args.config:
        try:
            if not isinstance(json.loads(config), dict):
                parser.error(f"--config {config!r} is not a JSON object")
        except json.JSONDecodeError as exc:
            parser.error(f"--config {config!r} is not JSON: {exc}")
    if args.per_transform < 1:
        parser.error("--per-transform must be at least 1")
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds {args.seeds!r} is not a comma-separated list of integers")
    clean_up_on_sigterm()  # a timeout's SIGTERM still removes the scratch folder
    scratch = Path(tempfile.mkdtemp(prefix="augment-robustness-"))
    try:
        base = Layout(scratch / "base")
        stages.run("fetch", parse_params({"data": {"mirrors": args.mirror}}), base)
        rows = run_benchmark(args.config, seeds, base, args.per_transform, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(
        f"\nCPU: {cpu_name()}; torch {torch.__version__}; {datetime.date.today().isoformat()}; "
        f"training threads: train.num_threads (column); scoring threads {torch.get_num_threads()}; "
        f"{args.per_transform} validation digits per transformation; chosen on validation only\n"
    )
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
