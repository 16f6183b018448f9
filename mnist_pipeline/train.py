"""Train stage: fit the network on MNIST's training split; resumable, bit-for-bit deterministic.

The dataset is decoded and normalised once into tensors; batches are random index slices of them
(no DataLoader, no per-image transforms). After every epoch a checkpoint (model, optimizer,
scheduler, RNG states, history and the params it was made with) is written atomically, so a run
killed mid-way resumes from its last completed epoch and ends with the same weights as an
uninterrupted one. A checkpoint made with other params or data is ignored (fresh start, logged).
When training ends the weights go to `layout.state_dict` and the history to
`layout.train_history` (a failed run leaves the previous pair untouched), and the checkpoint is
deleted, so a finished run leaves only its outputs: model.pt (bit-identical for the same params,
data and machine) and train_history.csv (identical but for its `seconds` column).
"""

from __future__ import annotations

import csv
import io
import math
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mnist_pipeline import training_loop as loop
from mnist_pipeline.atomic import write_text, write_with
from mnist_pipeline.dataset import dataset_sha256, load_mnist, normalise
from mnist_pipeline.errors import ParamsError
from mnist_pipeline.layout import Layout
from mnist_pipeline.params import TrainParams
from mnist_pipeline.progress import EpochReporter
from mnist_pipeline.weights import save_state_dict

HISTORY_COLUMNS = (
    "epoch",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "lr",
    "seconds",
)
CHECKPOINT_FORMAT = 1
EVAL_BATCH = 1000


@dataclass(frozen=True)
class TrainResult:
    """What `train` did: epochs trained now, the epoch it resumed after (0 = fresh), last scores."""

    epochs_run: int
    resumed_from: int
    train_loss: float
    val_accuracy: float | None
    seconds: float
    state_dict: Path


def log(message: str) -> None:
    """One plain progress line on stderr."""
    print(message, file=sys.stderr, flush=True)


def resolve_device(requested: str) -> torch.device:
    """`cpu`, or `cuda` when this machine has it (a clear error otherwise)."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise ParamsError(
            "train.device is 'cuda' but no CUDA device is available here "
            "(torch.cuda.is_available() is False); set train.device: cpu"
        )
    return torch.device(requested)


@contextmanager
def torch_settings(params: TrainParams) -> Iterator[None]:
    """Thread count and deterministic algorithms for the run; the caller's settings come back."""
    if params.device == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(params.num_threads)
    torch.use_deterministic_algorithms(True)
    try:
        with torch.random.fork_rng(devices=[]):  # our seeding does not leak to the caller
            yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def history_csv(history: list[dict[str, float]]) -> str:
    """The per-epoch history as CSV text (empty cells for missing validation scores)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HISTORY_COLUMNS)
    for row in history:
        values = (row.get(column) for column in HISTORY_COLUMNS)
        writer.writerow(["" if isinstance(v, float) and math.isnan(v) else v for v in values])
    return out.getvalue()


def _rng_states(shuffle: torch.Generator, device: torch.device) -> dict[str, Any]:
    states = {"torch": torch.get_rng_state(), "shuffle": shuffle.get_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def _set_rng_states(states: dict[str, Any], shuffle: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(states["torch"])
    shuffle.set_state(states["shuffle"])
    if device.type == "cuda":
        torch.cuda.set_rng_state(states["cuda"], device)


def load_checkpoint(path: Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint at `path` if it was made with the same params and data; else None."""
    if not path.is_file():
        return None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        log(f"ignoring unreadable checkpoint {path} ({exc}); starting fresh")
        return None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        log(f"ignoring checkpoint {path} of an unknown format; starting fresh")
        return None
    if checkpoint.get("identity") != identity:
        made = checkpoint.get("identity", {})
        changed = sorted(
            key
            for key in {**made.get("params", {}), **identity["params"]}
            if made.get("params", {}).get(key) != identity["params"].get(key)
        )
        if made.get("dataset_sha256") != identity["dataset_sha256"]:
            changed.append("dataset")
        log(f"checkpoint {path} was made with different {', '.join(changed)}; starting fresh")
        return None
    return checkpoint


def train(params: TrainParams, data_dir: Path, layout: Layout) -> TrainResult:
    """Train `params.arch` on the fetched dataset in `data_dir`; weights go to layout.state_dict."""
    device = resolve_device(params.device)
    precision = loop.resolve_precision(params.precision, device)
    started = time.perf_counter()
    with torch_settings(params):
        mnist = load_mnist(data_dir)
        n = len(mnist.train_labels)
        if params.val_size >= n:
            raise ParamsError(
                f"train.val_size={params.val_size} leaves no training images "
                f"(the training split has {n})"
            )
        identity = {
            "params": params.model_dump(mode="json"),
            "dataset_sha256": dataset_sha256(data_dir),
        }
        images = normalise(mnist.train_images).to(device)
        labels = mnist.train_labels.to(device)
        train_idx, val_idx = loop.split_indices(
            n, params.val_size, torch.Generator().manual_seed(params.seed)
        )
        val_images, val_labels = images[val_idx.to(device)], labels[val_idx.to(device)]
        cap = params.max_batches_per_epoch
        steps = loop.steps_per_epoch(len(train_idx), params.batch_size, cap)

        torch.manual_seed(params.seed)  # weight init and dropout
        shuffle = torch.Generator().manual_seed(params.seed + 1)
        model = loop.training_model(params.arch, device)
        optimizer = loop.make_optimizer(model, params)
        scheduler = loop.make_scheduler(optimizer, params, steps)
        history: list[dict[str, float]] = []
        done = 0
        checkpoint = load_checkpoint(layout.checkpoint, identity)
        if checkpoint is not None:
            model.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            scheduler.load_state_dict(checkpoint["scheduler"])
            _set_rng_states(checkpoint["rng"], shuffle, device)
            history, done = list(checkpoint["history"]), int(checkpoint["epoch"])
            log(f"resuming from {layout.checkpoint} after epoch {done}/{params.epochs}")

        emulated = precision == "bf16" and not loop.native_bf16(device)
        log(
            f"training on {device} in {precision} (train.precision: {params.precision})"
            + ("; this device emulates bfloat16, so fp32 would be faster" if emulated else "")
        )
        reporter = EpochReporter(params.epochs, min(len(train_idx), steps * params.batch_size))
        for epoch in range(done + 1, params.epochs + 1):
            epoch_start = time.perf_counter()
            lr = optimizer.param_groups[0]["lr"]
            batches = loop.batch_indices(train_idx, params.batch_size, shuffle, cap)
            with reporter.epoch(epoch) as on_batch:
                stats = loop.train_epoch(
                    model,
                    optimizer,
                    scheduler,
                    images,
                    labels,
                    batches,
                    on_batch,
                    precision,
                )
                val = loop.score(loop.predict_logits(model, val_images, EVAL_BATCH), val_labels)
            row = {
                "epoch": epoch,
                "train_loss": round(stats.loss, 6),
                "train_accuracy": round(stats.accuracy, 6),
                "val_loss": round(val.loss, 6),
                "val_accuracy": round(val.accuracy, 6),
                "lr": lr,
                "seconds": round(time.perf_counter() - epoch_start, 3),
            }
            history.append(row)
            reporter.done(row, stats.images)
            state = {
                "format": CHECKPOINT_FORMAT,
                "identity": identity,
                "epoch": epoch,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": _rng_states(shuffle, device),
                "history": history,
            }
            write_with(layout.checkpoint, lambda tmp, state=state: torch.save(state, tmp))

        # Weights and history are replaced together, only by a run that finished.
        save_state_dict(model, layout.state_dict)
        write_text(layout.train_history, history_csv(history))
        layout.checkpoint.unlink(missing_ok=True)
    last = history[-1] if history else {}
    val_accuracy = last.get("val_accuracy", float("nan"))
    return TrainResult(
        epochs_run=params.epochs - done,
        resumed_from=done,
        train_loss=float(last.get("train_loss", float("nan"))),
        val_accuracy=None if math.isnan(val_accuracy) else float(val_accuracy),
        seconds=time.perf_counter() - started,
        state_dict=layout.state_dict,
    )
