"""Does retraining learn the labelled digits users add? A shifted-distribution experiment.

From digits of the validation split (never the test set) it renders three disjoint sets of
"rotated" digits (30-45 degrees, dark on light paper at varied sizes and positions: what the
current model handles poorly; benchmarks/shifted_digits.py): `--add` digits users add through
`mnist-pipeline data add`, `--choose` digits to choose train.extra_weight on, and `--eval` digits
to report on. It trains the default pipeline without extra data and then with the added digits at
each `--weights` value, all through the CLI (`data add`, `ingest`, `train`, `evaluate`), and
prints each model's accuracy on MNIST validation (without the digits whose rotations were
added) and the `--choose` digits (what the weight is
chosen on), then on MNIST test, the `--eval` digits and the extra holdout, with the CPU.

    python -m benchmarks.extra_data_experiment --mirror ../shared/mnist
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.arguments import add_mirror_option, positive_int, positive_int_list
from benchmarks.machine import cpu_name
from benchmarks.scratch import scratch_folder
from benchmarks.shifted_digits import shifted_set
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.params import TrainParams
from mnist_pipeline.data.dataset import Mnist, load_mnist, normalise
from mnist_pipeline.data.preprocess import preprocess_bytes
from mnist_pipeline.inbox.drawings import to_uint8
from mnist_pipeline.model.network import predict_logits
from mnist_pipeline.model.weights import load_model
from mnist_pipeline.training.loop import split_indices

BIN = Path(sys.executable).parent


def cli(root: Path, *args: str, env: dict[str, str]) -> float:
    """Run `mnist-pipeline --root ROOT ARGS...`; its seconds (exit on failure, with its output)."""
    start = time.perf_counter()
    done = subprocess.run(
        [str(BIN / "mnist-pipeline"), "--root", str(root), *args],
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode:
        sys.exit(f"mnist-pipeline {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return time.perf_counter() - start


def write_pngs(folder: Path, rendered: list[tuple[bytes, int]]) -> dict[int, list[Path]]:
    """PNG files per label under `folder`."""
    files: dict[int, list[Path]] = {}
    for i, (png, label) in enumerate(rendered):
        path = folder / f"{i:04d}-{label}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png)
        files.setdefault(label, []).append(path)
    return files


def accuracy(model_path: Path, rendered: list[tuple[bytes, int]]) -> float:
    """The trained model's accuracy on rendered digits, preprocessed as `predict` does."""
    net = load_model("classic", model_path)
    pixels = np.stack([to_uint8(preprocess_bytes(png, "digit")) for png, _ in rendered])
    labels = torch.tensor([label for _, label in rendered])
    logits = predict_logits(net, normalise(torch.from_numpy(pixels)), 500)
    return float((logits.argmax(dim=1) == labels).float().mean())


def val_accuracy(model_path: Path, mnist: Mnist, indices: torch.Tensor) -> float:
    """The trained model's accuracy on MNIST training digits `indices` (plain, as stored)."""
    net = load_model("classic", model_path)
    logits = predict_logits(net, normalise(mnist.train_images[indices]), 500)
    return float((logits.argmax(dim=1) == mnist.train_labels[indices]).float().mean())


def fetched_base(scratch: Path, env: dict[str, str]) -> tuple[Path, Mnist, torch.Tensor]:
    """A project under `scratch` with MNIST fetched and default params, the dataset, and the
    indices of the default validation split (the digits benchmarks may draw from)."""
    base = scratch / "base"
    base.mkdir()
    (base / "params.yaml").write_text("{}\n")
    cli(base, "fetch", env=env)
    mnist = load_mnist(Layout(base).data_dir)
    defaults = TrainParams()
    _, val_idx = split_indices(
        len(mnist.train_labels), defaults.val_size, torch.Generator().manual_seed(defaults.seed)
    )
    return base, mnist, val_idx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_mirror_option(parser)
    parser.add_argument(
        "--add", type=positive_int, default=300, help="digits added through `data add`"
    )
    parser.add_argument(
        "--choose", type=positive_int, default=500, help="digits to choose the weight on"
    )
    parser.add_argument(
        "--eval", type=positive_int, default=1000, help="digits to report accuracy on"
    )
    parser.add_argument(
        "--weights", type=positive_int_list, default="1,4,16", help="train.extra_weight values"
    )
    parser.add_argument(
        "--epochs", type=positive_int, help="train.epochs of every run (default: params.yaml's)"
    )
    parser.add_argument("--out", type=Path, help="also write the results here (JSON)")
    args = parser.parse_args()
    env = {**os.environ, "MNIST_MIRROR": ",".join(args.mirror), "DVC_NO_ANALYTICS": "1"}
    with scratch_folder("extra-experiment-") as scratch:
        base, mnist, val_idx = fetched_base(scratch, env)
        cut = np.cumsum([0, args.add, args.choose, args.eval])
        sets = {}
        for seed, (name, lo, hi) in enumerate(
            zip(("add", "choose", "eval"), cut[:-1], cut[1:], strict=True), 1
        ):
            chosen = val_idx[lo:hi]
            images, labels = mnist.train_images[chosen].numpy(), mnist.train_labels[chosen].numpy()
            sets[name] = shifted_set(images, labels, seed=seed, style="rotated")
        added = write_pngs(scratch / "pngs", sets["add"])
        results = []
        for weight in [None, *args.weights]:
            root = scratch / ("none" if weight is None else f"w{weight}")
            shutil.copytree(base, root)
            train = {} if weight is None else {"extra_weight": weight}
            train |= {} if args.epochs is None else {"epochs": args.epochs}
            (root / "params.yaml").write_text(json.dumps({"train": train}) + "\n")
            if weight is not None:
                for label, files in sorted(added.items()):
                    cli(root, "data", "add", "--label", str(label), *map(str, files), env=env)
            cli(root, "ingest", env=env)
            seconds = cli(root, "train", env=env)
            cli(root, "evaluate", env=env)
            metrics = json.loads(Layout(root).metrics.read_text())
            state_dict = Layout(root).state_dict
            row = {
                "extra_weight": weight,
                # the validation split without the digits whose rotations were added
                "mnist_val": val_accuracy(state_dict, mnist, val_idx[args.add :]),
                "mnist_test": metrics["accuracy"],
                "extra_holdout": metrics["extra"]["accuracy"],
                "holdout_size": metrics["extra"]["total"],
                "choose_rotated": accuracy(state_dict, sets["choose"]),
                "eval_rotated": accuracy(state_dict, sets["eval"]),
                "train_seconds": round(seconds, 1),
            }
            results.append(row)
            print(json.dumps(row), flush=True)
    print(f"\nCPU: {cpu_name()}; {args.add} rotated digits added, {args.eval} to report on")
    print(
        f"{'extra_weight':>12} {'MNIST val':>9} {'choose':>7} | "
        f"{'MNIST test':>10} {'eval':>7} {'holdout':>8}"
    )
    for row in results:
        holdout = "-" if row["extra_holdout"] is None else f"{row['extra_holdout']:.4f}"
        print(
            f"{str(row['extra_weight'] or 'no extra'):>12} {row['mnist_val']:>9.4f} "
            f"{row['choose_rotated']:>7.4f} | {row['mnist_test']:>10.4f} "
            f"{row['eval_rotated']:>7.4f} {holdout:>8}"
        )
    if args.out:
        args.out.write_text(json.dumps({"cpu": cpu_name(), "results": results}, indent=1))


if __name__ == "__main__":
    main()
