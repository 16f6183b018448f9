"""Time to accuracy: wall seconds of training until a model first reaches 99.0% and 99.4%.

Recipes, each on the same CPU threads:

    classic   the original single script: the classic network (its dropout 0.5), torchvision
              MNIST + DataLoader (ToTensor, Normalize, shuffled), batch 64, Adam lr 1e-3,
              cross-entropy, 60,000 images an epoch.
    examples  today's pytorch/examples mnist/main.py, written from its published description:
              conv 1->32 3x3, ReLU, conv 32->64 3x3, ReLU, max-pool, dropout 0.25, fc 9216->128,
              ReLU, dropout 0.5, fc 128->10, log-softmax + NLL loss; Adadelta lr 1.0, StepLR
              (step 1 epoch, gamma 0.7), batch 64, 14 epochs. Its loader shuffles only on an
              accelerator (its `accel_kwargs`), so on a CPU it does not shuffle; kept.
    ours      the train stage itself (`mnist_pipeline.training.train.train`) with a params file
              (`--params`, default params.yaml; e.g. recipes/quick.yaml): 55,000 images an epoch,
              each epoch's time including its validation pass and checkpoint.

Test accuracy is checked after every epoch with the clock stopped, so "time to 99.0%" is the
training time of the epochs up to the first one whose model scores >= 99.0% on MNIST test. A
run stops at the last threshold, at its recipe's epochs, or past --max-seconds of training.
Every (recipe, seed) runs in a fresh process; printed: per run, and the median over seeds (a
recipe that did not reach a threshold in most seeds: "not reached"), with the CPU and each
network's forward FLOP per image (torch.utils.flop_counter).

    .venv/bin/python -m benchmarks.time_to_accuracy --recipes ours --params recipes/quick.yaml
    .venv/bin/python -m benchmarks.time_to_accuracy --recipes classic,examples --seeds 1
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.arguments import int_list, name_list, positive_float, positive_int
from benchmarks.bench_train import CLASSIC_BATCH, classic_dataset
from benchmarks.machine import cpu_name
from mnist_pipeline.core.errors import one_line_errors
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.params import load_params
from mnist_pipeline.data.dataset import load_mnist, normalise
from mnist_pipeline.model.network import build_model, predict_logits
from mnist_pipeline.training.loop import resolve_precision
from mnist_pipeline.training.train import train

THRESHOLDS = (0.990, 0.994)
EXAMPLES_EPOCHS = 14
Curve = list[tuple[int, float, float]]  # (epoch, training seconds so far, test accuracy)


class ExamplesNet(nn.Module):
    """The network of pytorch/examples mnist/main.py (1.2M parameters)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 1, 28, 28] -> [N, 10] log-probabilities."""
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        x = F.relu(self.fc1(torch.flatten(self.dropout1(x), 1)))
        return F.log_softmax(self.fc2(self.dropout2(x)), dim=1)


class Enough(Exception):
    """Raised by the epoch hook to end a training run whose curve is complete."""


class Clock:
    """Training time: runs between `resume()` and `pause()`, so checking is not counted."""

    def __init__(self) -> None:
        self.total, self.started = 0.0, time.perf_counter()

    def pause(self) -> float:
        self.total += time.perf_counter() - self.started
        return self.total

    def resume(self) -> None:
        self.started = time.perf_counter()


def test_accuracy(net: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Accuracy on MNIST test (in eval mode; the net's mode is restored), on the net's device."""
    training = net.training
    device = next(net.parameters()).device
    logits = predict_logits(net, images.to(device), 1000)
    correct = (logits.argmax(1) == labels.to(device)).sum().item()
    net.train(training)
    return correct / len(labels)


def loader_recipe(
    net: nn.Module,
    make_optimizer: Callable[[nn.Module], torch.optim.Optimizer],
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    shuffle: bool,
    epochs: int,
    data_dir: Path,
    max_seconds: float,
) -> Curve:
    """A DataLoader loop (classic, examples): the curve of (epoch, seconds, test accuracy)."""
    mnist = load_mnist(data_dir)
    test_images = normalise(mnist.test_images)
    optimizer = make_optimizer(net)
    scheduler = (
        torch.optim.lr_scheduler.StepLR(optimizer, 1, gamma=0.7)
        if isinstance(optimizer, torch.optim.Adadelta)
        else None
    )
    curve: Curve = []
    with tempfile.TemporaryDirectory() as tmp:
        loader = DataLoader(
            classic_dataset(data_dir, Path(tmp), train=True), CLASSIC_BATCH, shuffle=shuffle
        )
        clock = Clock()
        for epoch in range(1, epochs + 1):
            clock.resume()
            net.train()
            for data, target in loader:
                optimizer.zero_grad()
                loss(net(data), target).backward()
                optimizer.step()
            if scheduler is not None:
                scheduler.step()
            seconds = clock.pause()
            curve.append((epoch, seconds, test_accuracy(net, test_images, mnist.test_labels)))
            if curve[-1][2] >= THRESHOLDS[-1] or seconds > max_seconds:
                break
    return curve


def ours(params_file: Path, data_dir: Path, seed: int, threads: int, max_seconds: float) -> Curve:
    """The train stage with `params_file` (train.seed and train.num_threads replaced)."""
    params = load_params(params_file, overrides={"train.seed": seed, "train.num_threads": threads})
    mnist = load_mnist(data_dir)
    test_images = normalise(mnist.test_images)
    curve: Curve = []

    def check(epoch: int, net: nn.Module, seconds: float) -> None:
        total = (curve[-1][1] if curve else 0.0) + seconds
        curve.append((epoch, total, test_accuracy(net, test_images, mnist.test_labels)))
        if curve[-1][2] >= THRESHOLDS[-1] or total > max_seconds:
            raise Enough

    with tempfile.TemporaryDirectory() as tmp:
        layout = Layout(root=Path(tmp))
        layout.data_dir.parent.mkdir(parents=True)
        layout.data_dir.symlink_to(data_dir.resolve())
        with contextlib.suppress(Enough):
            train(params.model, params.train, layout, on_epoch=check)
    return curve


def run(recipe: str, seed: int, args: argparse.Namespace) -> Curve:
    """One (recipe, seed) run, in the calling (fresh) process."""
    torch.set_num_threads(args.threads)
    if recipe == "ours":
        return ours(args.params, args.data_dir, seed, args.threads, args.max_seconds)
    torch.manual_seed(seed)
    if recipe == "classic":
        return loader_recipe(
            build_model("classic"),
            lambda net: torch.optim.Adam(net.parameters(), lr=1e-3),
            F.cross_entropy,
            True,
            args.max_epochs,
            args.data_dir,
            args.max_seconds,
        )
    return loader_recipe(
        ExamplesNet(),
        lambda net: torch.optim.Adadelta(net.parameters(), lr=1.0),
        F.nll_loss,
        False,
        min(EXAMPLES_EPOCHS, args.max_epochs),
        args.data_dir,
        args.max_seconds,
    )


def forward_flops(net: nn.Module) -> int:
    """Forward FLOP for one 28x28 image (multiply and add counted apart)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net.eval()(torch.zeros(1, 1, 28, 28))
    return counter.get_total_flops()


def reached(curve: Curve, threshold: float) -> float | None:
    """Training seconds until the first epoch at or above `threshold` (None: never)."""
    return next((seconds for _, seconds, accuracy in curve if accuracy >= threshold), None)


def median_reached(times: list[float | None]) -> str:
    """The median over seeds, or 'not reached' when most seeds did not get there."""
    got = sorted(t for t in times if t is not None)
    if len(got) * 2 <= len(times):
        return f"not reached ({len(got)}/{len(times)} seeds)"
    padded = got + [float("inf")] * (len(times) - len(got))  # a miss ranks last
    return f"{statistics.median(padded):.1f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--recipes",
        type=lambda text: name_list(text, ("classic", "examples", "ours")),
        default="classic,examples,ours",
    )
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="for ours")
    parser.add_argument("--seeds", type=int_list, default="1,2,3")
    parser.add_argument("--threads", type=positive_int, default=2)
    parser.add_argument("--max-epochs", type=positive_int, default=15, help="classic and examples")
    parser.add_argument(
        "--max-seconds", type=positive_float, default=600.0, help="training per run"
    )
    parser.add_argument("--data-dir", type=Path, default=Path("data/mnist"))
    args = parser.parse_args()
    recipes, seeds = args.recipes, args.seeds
    with one_line_errors():  # a bad params file, seed or dataset: one line, before training
        ours_params = load_params(args.params)
        for seed in seeds:  # as `ours` will read them (train.seed >= 0, num_threads <= 256)
            load_params(args.params, {"train.seed": seed, "train.num_threads": args.threads})
        load_mnist(args.data_dir)
    precision = resolve_precision(ours_params.train.precision, torch.device("cpu"))
    print(
        f"CPU {cpu_name()}, {args.threads} threads, torch {torch.__version__}; classic and "
        f"examples in fp32 as published, ours in {precision} (train.precision: "
        f"{ours_params.train.precision}) with deterministic algorithms on, as the train stage runs"
    )
    arch = ours_params.model.arch
    flops = {"classic": build_model("classic"), f"ours ({arch})": build_model(arch)}
    flops["examples"] = ExamplesNet()
    for name, net in flops.items():
        params = sum(p.numel() for p in net.parameters())
        print(f"{name}: {params:,} parameters, {forward_flops(net) / 1e6:.2f} MFLOP/image forward")
    results: dict[str, list[Curve]] = {recipe: [] for recipe in recipes}
    spawn = multiprocessing.get_context("spawn")
    for seed in seeds:
        for recipe in recipes:  # alternating, so a noisy neighbour slows each alike
            with ProcessPoolExecutor(1, mp_context=spawn) as fresh:
                curve = fresh.submit(run, recipe, seed, args).result()
            results[recipe].append(curve)
            points = ", ".join(f"{e}: {a:.2%} @ {s:.1f}s" for e, s, a in curve)
            print(f"  {recipe} seed {seed}: {points}", flush=True)
    label = f"ours ({args.params})"
    for recipe, curves in results.items():
        name = label if recipe == "ours" else recipe
        summary = ", ".join(
            f"{t:.1%}: {median_reached([reached(c, t) for c in curves])}" for t in THRESHOLDS
        )
        print(f"{name}: median of {len(curves)} seeds: {summary}")


if __name__ == "__main__":
    main()
