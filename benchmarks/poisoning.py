"""How many mislabelled digits does it take to hurt one digit, and does the promotion rule notice?

An operator accepts a poisoned batch: real MNIST "7"s (from the validation split, never the test
set; drawn as dark-on-light photos, benchmarks/shifted_digits.py "plain") labelled "1". For each
`--counts` value the pipeline is trained through the CLI (`data add`, `ingest`, `train`,
`evaluate`) with that many poisoned digits, all with the same params (`--epochs`, seed). Each
model is then compared with the unpoisoned one (count 0, the champion) twice: by the old rule
(pooled accuracy over MNIST test plus the extra holdout >= the champion's: the poisoned holdout
rewards the poisoned model) and by the promotion rule (McNemar's exact test and the per-digit
tolerance: evaluation/paired.py, pipeline/promotion.py). Prints the target digit's MNIST test
accuracy per count and both decisions, with the CPU.

    python -m benchmarks.poisoning --mirror ../shared/mnist
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks.arguments import add_mirror_option, count_list, digit, positive_int
from benchmarks.extra_data_experiment import cli, fetched_base, write_pngs
from benchmarks.machine import cpu_name
from benchmarks.scratch import clean_up_on_sigterm
from benchmarks.shifted_digits import shifted_set
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.reports import Metrics, PromotionEvidence, read_report
from mnist_pipeline.core.service_params import PromotionParams
from mnist_pipeline.data.dataset import normalise
from mnist_pipeline.evaluation import paired
from mnist_pipeline.inbox import extra
from mnist_pipeline.model.network import predict_logits
from mnist_pipeline.model.weights import load_model
from mnist_pipeline.pipeline import promotion
from mnist_pipeline.registry.aliases import PRODUCTION


def test_correct(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """(labels, correct) per MNIST test image, from the project's reports/predictions.csv."""
    rows = np.loadtxt(Layout(root).predictions, delimiter=",", skiprows=1, usecols=(1, 2))
    labels, predicted = rows[:, 0].astype(int), rows[:, 1].astype(int)
    return labels, predicted == labels


def holdout_correct(model_root: Path, holdout: extra.Split) -> np.ndarray:
    """Which holdout digits the model trained in `model_root` gets right."""
    if not len(holdout):
        return np.zeros(0, bool)
    net = load_model("classic", Layout(model_root).state_dict)
    logits = predict_logits(net, normalise(torch.from_numpy(holdout.images)), 500)
    return (logits.argmax(dim=1).numpy() == holdout.labels).astype(bool)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_mirror_option(parser)
    parser.add_argument(
        "--counts", type=count_list, default="0,50,100,200,400", help="poisoned digits per run"
    )
    parser.add_argument("--digit", type=digit, default=7, help="the digit the attacker relabels")
    parser.add_argument("--as", dest="label", type=digit, default=1, help="the label it gets")
    parser.add_argument("--epochs", type=positive_int, default=8, help="train.epochs of every run")
    parser.add_argument("--threads", type=positive_int, default=2, help="train.num_threads")
    parser.add_argument("--out", type=Path, help="also write the results here (JSON)")
    args = parser.parse_args()
    counts = sorted({*args.counts, 0})
    env = {**os.environ, "MNIST_MIRROR": ",".join(args.mirror), "DVC_NO_ANALYTICS": "1"}
    train = {"epochs": args.epochs, "num_threads": args.threads}
    clean_up_on_sigterm()  # a timeout's SIGTERM still removes the scratch folder
    scratch = Path(tempfile.mkdtemp(prefix="poisoning-"))
    results = []
    try:
        base, mnist, val_idx = fetched_base(scratch, env)
        targets = [i for i in val_idx.tolist() if int(mnist.train_labels[i]) == args.digit]
        if len(targets) < max(counts):
            parser.error(f"the validation split has {len(targets)} {args.digit}s")
        chosen = targets[: max(counts)]
        images = mnist.train_images[chosen].numpy()
        poisoned = [
            (png, args.label)
            for png, _ in shifted_set(images, [0] * len(chosen), seed=1, style="plain")
        ]
        files = write_pngs(scratch / "pngs", poisoned)[args.label]
        runs: dict[int, Path] = {}
        for count in counts:
            root = runs[count] = scratch / f"n{count}"
            shutil.copytree(base, root)
            (root / "params.yaml").write_text(json.dumps({"train": train}) + "\n")
            if count:
                cli(
                    root,
                    "data",
                    "add",
                    "--label",
                    str(args.label),
                    *map(str, files[:count]),
                    env=env,
                )
            cli(root, "ingest", env=env)
            seconds = cli(root, "train", env=env)
            cli(root, "evaluate", env=env)
            metrics = read_report(Metrics, Layout(root).metrics, "evaluate")
            labels, correct = test_correct(root)
            target = labels == args.digit
            row = {
                "poisoned": count,
                "mnist_test": metrics.accuracy,
                "digit_accuracy": float(correct[target].mean()),
                "holdout_size": metrics.extra.total,
                "train_seconds": round(seconds, 1),
            }
            if count:
                row |= compare(runs[0], root, labels, correct, metrics)
            results.append(row)
            print(json.dumps(row), flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report(results, args)


def compare(
    champion_root: Path, root: Path, labels: np.ndarray, correct: np.ndarray, metrics: Metrics
) -> dict[str, object]:
    """The old pooled-accuracy rule and the promotion rule, champion = the unpoisoned model."""
    _, champion = test_correct(champion_root)
    holdout = extra.read_split(Layout(root).extra_dir, "holdout")
    theirs = holdout_correct(champion_root, holdout)
    ours = holdout_correct(root, holdout)
    total = len(labels) + len(holdout)
    old = (correct.sum() + ours.sum()) / total >= (champion.sum() + theirs.sum()) / total
    policy = PromotionParams()
    found = PromotionEvidence(
        **policy.model_dump(),
        mnist=paired.compare(champion, correct, labels, policy),
        holdout=paired.compare(theirs, ours, holdout.labels, policy, per_digit_check=False)
        if len(holdout)
        else None,
    )
    alias, why = promotion.rule(found, champion=1)
    deltas = found.mnist.per_digit
    worst = min(deltas, key=deltas.__getitem__)
    return {
        "old_rule_promotes": bool(old),
        "rule_promotes": alias == PRODUCTION,
        "rule": why,
        "worst_digit": f"{worst} {deltas[worst] * 100:+.2f}",
    }


def report(results: list[dict], args: argparse.Namespace) -> None:
    print(
        f"\nCPU: {cpu_name()}; {args.digit}s labelled {args.label}, {args.epochs} epochs, "
        f"{args.threads} threads"
    )
    base = results[0]["digit_accuracy"]
    print(
        f"{'poisoned':>8} {'MNIST test':>10} {'digit ' + str(args.digit):>8} {'change':>7}  "
        f"{'worst digit':>11}  {'old rule':>8}  evidence rule"
    )
    for row in results:
        change = (row["digit_accuracy"] - base) * 100
        old = {True: "promote", False: "keep", None: "-"}[row.get("old_rule_promotes")]
        new = {True: "promote", False: "keep", None: "-"}[row.get("rule_promotes")]
        print(
            f"{row['poisoned']:>8} {row['mnist_test']:>10.4f} {row['digit_accuracy']:>8.4f} "
            f"{change:>+7.2f}  {row.get('worst_digit', '-'):>11}  {old:>8}  {new}"
        )
    if args.out:
        args.out.write_text(json.dumps({"cpu": cpu_name(), "results": results}, indent=1))


if __name__ == "__main__":
    main()
