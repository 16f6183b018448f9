"""Choose training defaults on the validation split: each candidate config, several seeds.

Trains every `--config` (train overrides as JSON, e.g. '{"epochs": 30, "augment":
{"enabled": true}}') with each of `--seeds` through the train stage, in this process, and prints
each run's final validation accuracy (train.val_size images held out of MNIST's training set),
the mean and the spread per config, and the training seconds. The test set is never read.

    python -m benchmarks.choose_defaults --mirror ../shared/mnist \\
        --config '{}' --config '{"epochs": 30, "augment": {"enabled": true}}'
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
from pathlib import Path

from benchmarks.machine import cpu_name
from mnist_pipeline import stages
from mnist_pipeline.layout import Layout
from mnist_pipeline.params import parse_params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mirror", default=os.environ.get("MNIST_MIRROR", "../shared/mnist"))
    parser.add_argument("--config", action="append", required=True, help="train overrides, JSON")
    parser.add_argument("--seeds", default="1,2,3")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    scratch = Path(tempfile.mkdtemp(prefix="choose-defaults-"))
    base = Layout(scratch / "base")
    stages.run("fetch", parse_params({"data": {"mirrors": [args.mirror]}}), base)
    print(f"CPU: {cpu_name()}", flush=True)
    summary = []
    try:
        for config in args.config:
            overrides = json.loads(config)
            scores, seconds = [], []
            for seed in seeds:
                root = scratch / f"run-{len(summary)}-{seed}"
                shutil.copytree(base.data_dir, Layout(root).data_dir)
                params = parse_params({"train": {**overrides, "seed": seed}})
                result = stages.run("train", params, Layout(root))
                scores.append(result.val_accuracy)
                seconds.append(result.seconds)
                print(
                    f"{config} seed {seed}: val {result.val_accuracy:.4f}, {result.seconds:.0f} s",
                    flush=True,
                )
                shutil.rmtree(root)
            summary.append((config, scores, statistics.median(seconds)))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for config, scores, secs in summary:
        listed = "/".join(f"{s:.4f}" for s in scores)
        print(
            f"{config}: val {listed}, mean {statistics.mean(scores):.4f}, "
            f"spread {max(scores) - min(scores):.4f}, ~{secs:.0f} s each"
        )


if __name__ == "__main__":
    main()
