"""Training speed: the classic torchvision + DataLoader loop vs this project's tensor batching.

Classic (pytorch/examples style): torchvision.datasets.MNIST over the same raw files (symlinked
into a temp folder, so nothing is downloaded), ToTensor + Normalize per image, DataLoader with
batch 64 and shuffling, the same ClassicNet, Adam. Ours: the dataset decoded and normalised once
into tensors, random index batches of train.batch_size (params default 128) from the 55k
training split, the train stage's epoch function, optimizer (fused Adam) and torch settings
(threads, deterministic algorithms), once in fp32 and once with bf16 autocast (train.precision).
All run on the same number of threads.

Every measurement runs in a fresh process (no allocator or cache state carried over), and the
three kinds alternate within each repeat so that a noisy neighbour slows them alike. Each times
`--batches` batches of an epoch, after 10 untimed ones (the first steps' one-time costs would
otherwise be scaled up to an epoch by a different factor for each loop), and extrapolates to a
full epoch (`--full` times whole epochs). Printed: each kind's median seconds per epoch over
`--repeats` and the test accuracy its model reached after its timed training (partial epochs
with --batches); then per image (an epoch of ours has 60,000 - train.val_size images, the
classic one 60,000) each kind's microseconds, its ratio to the classic loop's and the median of
the per-repeat ratios (robust to drifting load).

    .venv/bin/python -m benchmarks.bench_train                # 200 batches x 5 repeats each
    .venv/bin/python -m benchmarks.bench_train --full --repeats 3
    .venv/bin/python -m benchmarks.bench_train --augment    # + the cost of train.augment
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from benchmarks.arguments import existing_folder, positive_int
from benchmarks.machine import cpu_name
from mnist_pipeline.core.contract import MNIST_MEAN, MNIST_STD
from mnist_pipeline.core.params import ModelParams, TrainParams
from mnist_pipeline.data.augment import augment
from mnist_pipeline.data.dataset import load_mnist, normalise
from mnist_pipeline.data.manifest import MNIST_FILES
from mnist_pipeline.evaluation import metrics
from mnist_pipeline.evaluation.metrics import EpochStats
from mnist_pipeline.model.network import build_model, predict_logits
from mnist_pipeline.training import loop
from mnist_pipeline.training.runtime import torch_settings

CLASSIC_BATCH = 64


def classic_dataset(data_dir: Path, tmp: Path, train: bool) -> datasets.MNIST:
    """torchvision's MNIST reading our files through symlinks in tmp/MNIST/raw/."""
    raw = tmp / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for f in MNIST_FILES:
        if not (raw / f.name).exists():
            (raw / f.name).symlink_to((data_dir / f.name).resolve())
    transform = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))]
    )
    return datasets.MNIST(str(tmp), train=train, download=False, transform=transform)


Run = tuple[float, float, torch.nn.Module]  # seconds, fraction of an epoch, trained model
WARMUP = 10  # untimed batches before `--batches` timed ones (kernel setup, optimizer state)


def classic_epoch(dataset: datasets.MNIST, batches: int | None, seed: int) -> Run:
    """The classic loop over one epoch, or over `batches` batches after WARMUP untimed ones."""
    torch.manual_seed(seed)
    model = build_model("classic")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(dataset, batch_size=CLASSIC_BATCH, shuffle=True)
    model.train()
    warmup = 0 if batches is None else WARMUP
    start = time.perf_counter()
    done = 0
    for data, target in loader:
        if done == warmup:
            start = time.perf_counter()  # the first steps' one-time costs are not timed
        optimizer.zero_grad()
        loss = F.cross_entropy(model(data), target)
        loss.backward()
        optimizer.step()
        done += 1
        if batches is not None and done >= warmup + batches:
            break
    return time.perf_counter() - start, (done - warmup) / len(loader), model


def ours_epoch(
    images: torch.Tensor, labels: torch.Tensor, params: TrainParams, batches: int | None, seed: int
) -> Run:
    """This project's loop over one epoch of the 55k split, or over `batches` batches after
    WARMUP untimed ones."""
    torch.manual_seed(seed)
    model = loop.training_model(ModelParams().arch, dropout=params.dropout)  # as the stage's
    optimizer = loop.make_optimizer(model, params)
    train_idx, _ = loop.split_indices(
        len(labels), params.val_size, torch.Generator().manual_seed(1)
    )
    steps = loop.steps_per_epoch(len(train_idx), params.batch_size, None)
    scheduler = loop.make_scheduler(optimizer, params, steps)
    generator = torch.Generator().manual_seed(seed)
    transform = (
        (lambda x: augment(x, params.augment, generator)) if params.augment.enabled else None
    )

    def steps_of(cap: int | None) -> EpochStats:
        return loop.train_epoch(
            model,
            optimizer,
            scheduler,
            images,
            labels,
            loop.batch_indices(train_idx, params.batch_size, generator, cap),
            precision=params.precision,
            transform=transform,
        )

    if batches is not None:
        steps_of(WARMUP)  # the first steps' one-time costs are not timed
    start = time.perf_counter()
    stats = steps_of(batches)
    return time.perf_counter() - start, stats.images / len(train_idx), model


# kind -> (train.precision, train.augment.enabled); the augmented kinds only with --augment
KINDS = {"classic": None, "ours fp32": ("fp32", False), "ours bf16": ("bf16", False)}
AUGMENTED = {"ours fp32 + augment": ("fp32", True), "ours bf16 + augment": ("bf16", True)}


def measure(
    kind: str, data_dir: Path, params: TrainParams, batches: int | None, seed: int
) -> tuple[float, float, float]:
    """In a fresh process: (seconds per epoch, test accuracy, setup seconds) of one `kind` run."""
    torch.set_num_threads(params.num_threads)
    mnist = load_mnist(data_dir)
    test_images = normalise(mnist.test_images)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        if kind == "classic":
            dataset = classic_dataset(data_dir, Path(tmp), train=True)
            setup = time.perf_counter() - start
            seconds, fraction, model = classic_epoch(dataset, batches, seed)
        else:
            images = normalise(mnist.train_images)
            setup = time.perf_counter() - start
            precision, augmented = {**KINDS, **AUGMENTED}[kind]
            params = params.model_copy(
                update={
                    "precision": precision,
                    "augment": params.augment.model_copy(update={"enabled": augmented}),
                }
            )
            with torch_settings(params):
                seconds, fraction, model = ours_epoch(
                    images, mnist.train_labels, params, batches, seed
                )
    logits = predict_logits(model, test_images, 1000)
    return seconds / fraction, metrics.score(logits, mnist.test_labels).accuracy, setup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=existing_folder, default=Path("data/mnist"))
    parser.add_argument(
        "--batches", type=positive_int, default=200, help="batches timed per repeat"
    )
    parser.add_argument("--full", action="store_true", help="time whole epochs")
    parser.add_argument("--repeats", type=positive_int, default=5)
    parser.add_argument("--threads", type=positive_int, default=TrainParams().num_threads)
    parser.add_argument(
        "--batch-size", type=positive_int, default=TrainParams().batch_size, help="ours"
    )
    parser.add_argument("--augment", action="store_true", help="also ours with augmentation")
    args = parser.parse_args()
    kinds = {**KINDS, **(AUGMENTED if args.augment else {})}
    batches = None if args.full else args.batches
    params = TrainParams(
        batch_size=args.batch_size, lr_schedule="constant", num_threads=args.threads
    )
    what = "full epochs" if args.full else f"{args.batches} batches extrapolated to an epoch"
    print(f"threads {args.threads}, {args.repeats} repeats, {what}, one process per run")
    print(f"CPU: {cpu_name()}; bf16 native: {loop.native_bf16(torch.device('cpu'))}")

    results: dict[str, list[tuple[float, float, float]]] = {kind: [] for kind in kinds}
    spawn = multiprocessing.get_context("spawn")
    for r in range(args.repeats):
        for kind in kinds:
            with ProcessPoolExecutor(1, mp_context=spawn) as fresh:
                run = fresh.submit(measure, kind, args.data_dir, params, batches, r).result()
            results[kind].append(run)
            print(f"  repeat {r + 1} {kind}: {run[0]:.2f} s/epoch", flush=True)

    median = {kind: statistics.median(run[0] for run in runs) for kind, runs in results.items()}
    print(f"classic: torchvision MNIST + DataLoader, batch {CLASSIC_BATCH}, 60000 images")
    print(f"ours: tensors, batch {params.batch_size}, {60000 - params.val_size} images")
    for kind, runs in results.items():
        setup = statistics.median(run[2] for run in runs)
        print(
            f"{kind}: median {median[kind]:.2f} s/epoch, setup {setup:.2f} s, "
            f"test accuracy {runs[-1][1]:.2%}"
        )
    for kind in AUGMENTED if args.augment else ():
        plain = kind.removesuffix(" + augment")
        paired = statistics.median(
            a[0] / p[0] for a, p in zip(results[kind], results[plain], strict=True)
        )
        print(
            f"augmentation: {kind} / {plain}: {median[kind] / median[plain]:.3f}, "
            f"median of per-repeat ratios {paired:.3f}"
        )
    # Per image: the classic epoch is 60,000 images, ours 60,000 - val_size.
    images = {kind: 60000 if kind == "classic" else 60000 - params.val_size for kind in kinds}
    per_image = {kind: median[kind] / images[kind] * 1e6 for kind in kinds}
    c = per_image["classic"]
    print(f"classic: {c:.1f} us/image")
    for kind in [k for k in kinds if k != "classic"]:  # with --augment, the augmented too
        paired = statistics.median(
            (mine[0] / images[kind]) / (theirs[0] / images["classic"])
            for mine, theirs in zip(results[kind], results["classic"], strict=True)
        )
        print(
            f"per image {kind}/classic: {per_image[kind]:.1f} us, ratio {per_image[kind] / c:.3f} "
            f"({c / per_image[kind]:.1f}x faster), median of per-repeat ratios {paired:.3f}"
        )


if __name__ == "__main__":
    main()
