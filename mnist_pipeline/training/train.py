"""Train stage: fit the network on MNIST's training split (plus the ingested labelled digits
users added, oversampled by train.extra_weight); resumable, bit-for-bit deterministic.

The dataset is decoded and normalised once into tensors; batches are random index slices of them
(no DataLoader, no per-image transforms). After every epoch a checkpoint (model, optimizer,
scheduler, RNG states, history and the params it was made with) is written atomically, so a run
killed mid-way resumes from its last completed epoch and ends with the same weights as an
uninterrupted one. A checkpoint made with other params or data is ignored (fresh start, logged).
When training ends the weights go to `layout.state_dict` and the history to
`layout.train_history` (a failed run leaves the previous pair untouched), and the checkpoint is
deleted, so a finished run leaves only its outputs: model.pt and train_history.csv, both
bit-identical for the same params, data and machine. Each epoch's wall-clock seconds go apart,
to `layout.train_timings`, which no DVC output or record includes.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mnist_pipeline.core.atomic import check_targets
from mnist_pipeline.core.errors import ParamsError
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.params import ModelParams, TrainParams
from mnist_pipeline.core.progress import EpochReporter, log
from mnist_pipeline.core.text import printable
from mnist_pipeline.data.augment import augment
from mnist_pipeline.data.dataset import normalise
from mnist_pipeline.evaluation import metrics
from mnist_pipeline.model.network import predict_logits
from mnist_pipeline.training import checkpoint as checkpoints
from mnist_pipeline.training import loop, runtime, temperature
from mnist_pipeline.training.inputs import read_inputs
from mnist_pipeline.training.outputs import output_files, remove_stale_temps, write_outputs

HISTORY_COLUMNS = (
    "epoch",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "lr",
)  # a function of the inputs only: DVC tracks the file, model.json records its hash
TIMING_COLUMNS = ("epoch", "seconds")  # wall-clock time: layout.train_timings, never tracked
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

    def summary(self) -> str:
        resumed = f", resumed after epoch {self.resumed_from}" if self.resumed_from else ""
        val = "n/a" if self.val_accuracy is None else f"{self.val_accuracy:.4f}"
        return (
            f"trained {self.epochs_run} epoch(s){resumed} in {self.seconds:.1f} s: train loss "
            f"{self.train_loss:.4f}, val accuracy {val} -> {printable(str(self.state_dict))}"
        )


def history_csv(history: list[dict[str, float]], columns: tuple[str, ...] = HISTORY_COLUMNS) -> str:
    """`columns` of the per-epoch history as CSV text (empty cells for missing validation scores
    and for seconds a checkpoint from an older version lacks)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in history:
        values = (row.get(column) for column in columns)
        writer.writerow(["" if isinstance(v, float) and math.isnan(v) else v for v in values])
    return out.getvalue()


def identity(fingerprint: dict[str, Any], precision: str) -> dict[str, Any]:
    """What makes two runs the same run (a checkpoint resumes only its own): the dotted params
    that shape the weights, the data and the training code, from the run's inputs fingerprint,
    the precision `train.precision` resolved to here, and the PyTorch release (its kernels may
    give other weights: an upgrade resumes nothing)."""
    flat = {
        f"{name}.{key}": value
        for name, keys in fingerprint["params"].items()
        for key, value in keys.items()
    }
    return {
        "params": flat,
        "dataset_sha256": fingerprint["dataset_sha256"],
        "extra_sha256": fingerprint["extra_sha256"],
        "code_sha256": fingerprint["code_sha256"],
        "precision": precision,
        "torch": str(torch.__version__),  # TorchVersion is not loadable with weights_only
    }


EpochHook = Callable[[int, torch.nn.Module, float], None]


def train(
    model: ModelParams, params: TrainParams, layout: Layout, on_epoch: EpochHook | None = None
) -> TrainResult:
    """Train `model.arch` on the fetched dataset; weights go to layout.state_dict. A training
    already writing layout.model_dir makes this one fail at once (checkpoint.only_training).

    `on_epoch(epoch, net, seconds)`, if given, is called after each epoch's checkpoint with the
    network and that epoch's wall seconds (training, validation, checkpoint); it must leave `net`
    as it found it (benchmarks score it on the test set there)."""
    check_targets(*output_files(layout))  # fail before an epoch (and before the lock's file)
    with checkpoints.only_training(layout.model_dir):
        remove_stale_temps(layout)
        return _train(model, params, layout, on_epoch)


def _train(
    model: ModelParams, params: TrainParams, layout: Layout, on_epoch: EpochHook | None
) -> TrainResult:
    device = runtime.resolve_device(params.device)
    precision = loop.resolve_precision(params.precision, device)
    started = time.perf_counter()
    with runtime.torch_settings(params, device):
        inputs = read_inputs(model, params, layout)
        mnist, added = inputs.mnist, inputs.added
        n = len(mnist.train_labels)
        if params.val_size >= n:
            raise ParamsError(
                f"train.val_size={params.val_size} leaves no training images "
                f"(the training split has {n})"
            )
        fingerprint = inputs.fingerprint
        run_identity = identity(fingerprint, precision)
        images, labels = normalise(mnist.train_images), mnist.train_labels
        train_idx, val_idx = loop.split_indices(
            n, params.val_size, torch.Generator().manual_seed(params.seed)
        )
        if len(added):
            images, labels, train_idx = loop.add_extra(
                images,
                labels,
                train_idx,
                normalise(torch.from_numpy(added.images)),
                torch.from_numpy(added.labels).long(),
                params.extra_weight,
            )
            log(
                f"adding {len(added)} labelled digit(s) from {layout.extra_dir}, each seen "
                f"{params.extra_weight} times an epoch (train.extra_weight)"
            )
        images, labels = images.to(device), labels.to(device)
        val_images, val_labels = images[val_idx.to(device)], labels[val_idx.to(device)]
        cap = params.max_batches_per_epoch
        steps = loop.steps_per_epoch(len(train_idx), params.batch_size, cap)

        def start() -> tuple[torch.Generator, torch.nn.Module, Any, Any]:
            runtime.seed(params.seed, device)  # weight init and dropout
            shuffle = torch.Generator().manual_seed(params.seed + 1)
            net = loop.training_model(model.arch, device, params.dropout)
            optimizer = loop.make_optimizer(net, params)
            return shuffle, net, optimizer, loop.make_scheduler(optimizer, params, steps)

        shuffle, net, optimizer, scheduler = start()
        history: list[dict[str, float]] = []
        done = 0
        checkpoint = checkpoints.load(layout.checkpoint, run_identity)
        if checkpoint is not None:
            try:
                net.load_state_dict(checkpoint["model"])
                optimizer.load_state_dict(checkpoint["optimizer"])
                scheduler.load_state_dict(checkpoint["scheduler"])
                checkpoints.restore_rng_states(checkpoint["rng"], shuffle, device)
                history, done = list(checkpoint["history"]), int(checkpoint["epoch"])
            except (KeyError, TypeError, ValueError, RuntimeError) as exc:  # its contents
                why = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
                log(f"ignoring checkpoint {layout.checkpoint} ({why}); starting fresh")
                shuffle, net, optimizer, scheduler = start()  # as if there had been none
                history, done = [], 0
            else:
                log(f"resuming from {layout.checkpoint} after epoch {done}/{params.epochs}")

        emulated = precision == "bf16" and not loop.native_bf16(device)
        log(
            f"training on {device} in {precision} (train.precision: {params.precision})"
            + ("; this device emulates bfloat16, so fp32 would be faster" if emulated else "")
        )
        # Augmentation draws from the shuffling generator: checkpointed with it, so a resumed run
        # warps the batches the uninterrupted one would have.
        transform = (
            (lambda x: augment(x, params.augment, shuffle)) if params.augment.enabled else None
        )
        reporter = EpochReporter(params.epochs, min(len(train_idx), steps * params.batch_size))
        for epoch in range(done + 1, params.epochs + 1):
            epoch_start = time.perf_counter()
            lr = optimizer.param_groups[0]["lr"]
            batches = loop.batch_indices(train_idx, params.batch_size, shuffle, cap)
            with reporter.epoch(epoch) as on_batch:
                stats = loop.train_epoch(
                    net,
                    optimizer,
                    scheduler,
                    images,
                    labels,
                    batches,
                    on_batch,
                    precision,
                    transform,
                    params.label_smoothing,
                )
                val = metrics.score(predict_logits(net, val_images, EVAL_BATCH), val_labels)
            loop.check_finite(epoch, stats, val, net, params.lr_schedule)  # before checkpointing
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
            checkpoints.save(
                layout.checkpoint,
                {
                    "identity": run_identity,
                    "epoch": epoch,
                    "model": net.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": checkpoints.rng_states(shuffle, device),
                    "history": history,
                },
            )
            if on_epoch is not None:
                on_epoch(epoch, net, time.perf_counter() - epoch_start)

        calibration = None
        if params.temperature_scaling:  # after the last checkpoint: a resumed run folds anew
            calibration = temperature.calibrate(net, val_images, val_labels, EVAL_BATCH)
            log(temperature.summary(calibration))
        write_outputs(  # only by a run that finished
            layout,
            net,
            history_csv(history),
            history_csv(history, TIMING_COLUMNS),
            {"fingerprint": fingerprint, "temperature": calibration, "precision": precision},
        )
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
