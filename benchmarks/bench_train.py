"""Training speed: the classic torchvision + DataLoader loop vs this project's tensor batching.

Classic (pytorch/examples style): torchvision.datasets.MNIST over the same raw files (symlinked
into a temp folder, so nothing is downloaded), ToTensor + Normalize per image, DataLoader with
batch 64 and shuffling, the same ClassicNet, Adam. Ours: the dataset decoded and normalised once
into tensors, random index batches of train.batch_size (params default 128) from the 55k
training split, the train stage's epoch function. Both run on the same threads.

Each repeat times the first `--batches` batches of an epoch and extrapolates to a full epoch
(`--full` times whole epochs instead); medians over `--repeats` are printed, with the ratio and
the test accuracy each model reached after its timed training (partial epochs with --batches).

    .venv/bin/python benchmarks/bench_train.py                # 200 batches x 3 repeats each
    .venv/bin/python benchmarks/bench_train.py --full --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from mnist_pipeline import training_loop as loop
from mnist_pipeline.dataset import MNIST_MEAN, MNIST_STD, load_mnist, normalise
from mnist_pipeline.manifest import MNIST_FILES
from mnist_pipeline.model import build_model
from mnist_pipeline.params import TrainParams

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


def classic_epoch(dataset: datasets.MNIST, batches: int | None, seed: int) -> Run:
    """The classic loop over (the first `batches` batches of) one epoch."""
    torch.manual_seed(seed)
    model = build_model("classic")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(dataset, batch_size=CLASSIC_BATCH, shuffle=True)
    model.train()
    start = time.perf_counter()
    done = 0
    for data, target in loader:
        optimizer.zero_grad()
        loss = F.cross_entropy(model(data), target)
        loss.backward()
        optimizer.step()
        done += 1
        if batches is not None and done >= batches:
            break
    return time.perf_counter() - start, done / len(loader), model


def ours_epoch(
    images: torch.Tensor, labels: torch.Tensor, params: TrainParams, batches: int | None, seed: int
) -> Run:
    """This project's loop over (the first `batches` batches of) one epoch of the 55k split."""
    torch.manual_seed(seed)
    model = loop.training_model(params.arch)
    optimizer = loop.make_optimizer(model, params)
    train_idx, _ = loop.split_indices(
        len(labels), params.val_size, torch.Generator().manual_seed(1)
    )
    steps = loop.steps_per_epoch(len(train_idx), params.batch_size, None)
    scheduler = loop.make_scheduler(optimizer, params, steps)
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    stats = loop.train_epoch(
        model,
        optimizer,
        scheduler,
        images,
        labels,
        loop.batch_indices(train_idx, params.batch_size, generator, batches),
    )
    return time.perf_counter() - start, stats.images / len(train_idx), model


def test_accuracy(model: torch.nn.Module, test_images: torch.Tensor, labels: torch.Tensor) -> float:
    return loop.score(loop.predict_logits(model, test_images, 1000), labels).accuracy


def timed(
    label: str, run: Callable[[int], Run], repeats: int
) -> tuple[list[float], torch.nn.Module]:
    """Per-epoch seconds (extrapolated from the timed fraction) of each repeat; the last model."""
    per_epoch = []
    for r in range(repeats):
        seconds, fraction, model = run(r)
        per_epoch.append(seconds / fraction)
        print(
            f"  {label} repeat {r + 1}: {seconds:.2f} s for {fraction:.1%} of an epoch "
            f"-> {seconds / fraction:.1f} s/epoch",
            flush=True,
        )
    return per_epoch, model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("data/mnist"))
    parser.add_argument("--batches", type=int, default=200, help="batches timed per repeat")
    parser.add_argument("--full", action="store_true", help="time whole epochs")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=TrainParams().num_threads)
    parser.add_argument("--batch-size", type=int, default=TrainParams().batch_size, help="ours")
    args = parser.parse_args()
    batches = None if args.full else args.batches
    torch.set_num_threads(args.threads)
    params = TrainParams(batch_size=args.batch_size, lr_schedule="constant")

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        classic_train = classic_dataset(args.data_dir, Path(tmp), train=True)
        classic_setup = time.perf_counter() - start
        start = time.perf_counter()
        mnist = load_mnist(args.data_dir)
        images = normalise(mnist.train_images)
        ours_setup = time.perf_counter() - start
        test_images = normalise(mnist.test_images)

        what = "full epochs" if args.full else f"{args.batches} batches extrapolated to an epoch"
        print(f"threads {args.threads}, {args.repeats} repeats, {what}")
        classic, classic_model = timed(
            "classic", lambda r: classic_epoch(classic_train, batches, r), args.repeats
        )
        ours, ours_model = timed(
            "ours",
            lambda r: ours_epoch(images, mnist.train_labels, params, batches, r),
            args.repeats,
        )
        classic_acc = test_accuracy(classic_model, test_images, mnist.test_labels)
        ours_acc = test_accuracy(ours_model, test_images, mnist.test_labels)

    c, o = statistics.median(classic), statistics.median(ours)
    n_classic, n_ours = len(classic_train), len(images) - params.val_size
    print(
        f"classic (torchvision MNIST + DataLoader, batch {CLASSIC_BATCH}, {n_classic} images): "
        f"median {c:.2f} s/epoch, setup {classic_setup:.2f} s, test accuracy {classic_acc:.2%}"
    )
    print(
        f"ours (tensors, batch {params.batch_size}, {n_ours} images): "
        f"median {o:.2f} s/epoch, setup {ours_setup:.2f} s, test accuracy {ours_acc:.2%}"
    )
    print(f"ratio ours/classic: {o / c:.3f} ({c / o:.1f}x faster per epoch)")
    print(f"per image: classic {c / n_classic * 1e6:.0f} us, ours {o / n_ours * 1e6:.0f} us")


if __name__ == "__main__":
    main()
