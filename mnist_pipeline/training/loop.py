"""The pure pieces of training: splitting, batching, one epoch, the LR schedule.

No I/O and no global settings here; `train.py` seeds, checkpoints and reports around them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim import Adam, Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR

from mnist_pipeline.core.errors import ParamsError, TrainingError
from mnist_pipeline.core.params import TrainParams
from mnist_pipeline.core.progress import log
from mnist_pipeline.evaluation.metrics import EpochStats
from mnist_pipeline.model.network import build_model


def split_indices(
    n: int, val_size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random split of range(n) into (train, validation) index tensors."""
    order = torch.randperm(n, generator=generator)
    return order[val_size:], order[:val_size]


def add_extra(
    images: torch.Tensor,
    labels: torch.Tensor,
    train_idx: torch.Tensor,
    extra_images: torch.Tensor,
    extra_labels: torch.Tensor,
    weight: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Append extra training images after `images`; each one's index enters `train_idx`
    `weight` times (oversampling), so an epoch sees it `weight` times."""
    start = len(labels)
    extra_idx = torch.arange(start, start + len(extra_labels)).repeat(weight)
    return (
        torch.cat([images, extra_images]),
        torch.cat([labels, extra_labels]),
        torch.cat([train_idx, extra_idx]),
    )


def batch_indices(
    indices: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
    max_batches: int | None = None,
) -> Iterator[torch.Tensor]:
    """Shuffle `indices` with `generator` and yield batches (the last may be smaller)."""
    shuffled = indices[torch.randperm(len(indices), generator=generator)]
    batches = shuffled.split(batch_size)
    yield from batches[:max_batches] if max_batches is not None else batches


def steps_per_epoch(n_train: int, batch_size: int, max_batches: int | None) -> int:
    """How many optimizer steps one epoch makes."""
    steps = -(-n_train // batch_size)
    return min(steps, max_batches) if max_batches is not None else steps


def training_model(
    arch: str, device: torch.device | str = "cpu", dropout: float | None = None
) -> nn.Module:
    """`arch` on `device` (with every dropout layer at `dropout`, if given), in channels_last
    memory format for training.

    oneDNN's channels_last convolutions are ~1.4x faster on CPU for this net; a [N, 1, 28, 28]
    input batch is already channels_last (one channel), so the data needs no conversion.
    """
    return build_model(arch, dropout).to(device, memory_format=torch.channels_last)


def make_optimizer(model: nn.Module, params: TrainParams) -> Optimizer:
    """Adam at the starting learning rate with train.adam_betas; fused (one kernel per step,
    ~3x faster here)."""
    return Adam(model.parameters(), lr=params.learning_rate, betas=params.adam_betas, fused=True)


def native_bf16(device: torch.device) -> bool:
    """Whether `device` does bfloat16 arithmetic in hardware (AVX-512 BF16/AMX, or the GPU)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def resolve_precision(requested: str, device: torch.device) -> str:
    """`fp32` or `bf16` as asked; `auto` is `bf16` where `device` has it natively, else `fp32`.

    Emulated bfloat16 is slower than float32, so `auto` never picks it there.
    """
    if requested != "auto":
        return requested
    return "bf16" if native_bf16(device) else "fp32"


def make_scheduler(optimizer: Optimizer, params: TrainParams, steps: int) -> LRScheduler:
    """Per-step schedule: `constant`, or `onecycle` from learning_rate up to max_learning_rate.

    OneCycle warms up over the first train.warmup_fraction of the steps, then anneals (cosine)
    to learning_rate/1e4.
    """
    if params.lr_schedule == "constant":
        return LambdaLR(optimizer, lambda _: 1.0)
    total = params.epochs * steps
    if params.warmup_fraction * total == 1:  # OneCycleLR would divide by a zero-step rise
        raise ParamsError(
            f"train.warmup_fraction {params.warmup_fraction} of {total} steps is a warm-up of "
            "exactly 1 step, which onecycle cannot schedule: choose another warmup_fraction"
        )
    if params.warmup_fraction * total < 1:  # a smoke run may mean it; a training would not
        log(
            f"warning: train.warmup_fraction {params.warmup_fraction} of {total} step(s) is "
            f"no warm-up: onecycle starts at its peak ({params.max_learning_rate:g}) and "
            f"anneals at once (a 1-step run trains at {params.learning_rate / 1e4:.1e} only); "
            "fine for a smoke run, not for training"
        )
    return OneCycleLR(
        optimizer,
        max_lr=params.max_learning_rate,
        total_steps=total,
        div_factor=params.max_learning_rate / params.learning_rate,
        pct_start=params.warmup_fraction,
    )


def train_epoch(
    model: nn.Module,
    optimizer: Optimizer,
    scheduler: LRScheduler,
    images: torch.Tensor,
    labels: torch.Tensor,
    batches: Iterator[torch.Tensor],
    on_batch: Callable[[int, float, float], None] | None = None,
    precision: str = "fp32",
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    label_smoothing: float = 0.0,
) -> EpochStats:
    """One pass of Adam + cross-entropy over `batches` (index tensors into images/labels).

    `on_batch(batch_images, running_loss, running_accuracy)` is called after every step.
    `precision="bf16"` runs forward and loss under bfloat16 autocast (mixed precision: weights,
    gradients and optimizer state stay float32). `transform` (augmentation) maps each batch of
    images before the forward pass. `label_smoothing` as in `torch.nn.CrossEntropyLoss`.
    """
    model.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=images.device)
    correct = torch.zeros((), dtype=torch.int64, device=images.device)
    seen = 0
    for index in batches:
        index = index.to(images.device)
        x, y = images[index], labels[index]
        if transform is not None:
            x = transform(x)
        with torch.autocast(images.device.type, torch.bfloat16, enabled=precision == "bf16"):
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        loss_sum += loss.detach() * len(y)
        correct += (logits.detach().argmax(1) == y).sum()
        seen += len(y)
        if on_batch is not None:
            on_batch(len(y), float(loss_sum) / seen, int(correct) / seen)
    if seen == 0:
        return EpochStats(float("nan"), float("nan"), 0)
    return EpochStats(float(loss_sum) / seen, int(correct) / seen, seen)


def check_finite(
    epoch: int, train: EpochStats, val: EpochStats, net: nn.Module, schedule: str = "onecycle"
) -> None:
    """TrainingError when epoch `epoch` diverged (NaN or infinity): its losses, or, without a
    validation pass to show them (`train.val_size: 0`), the weights its last step left. Every
    later epoch, the checkpoint and the model would carry them. The error names the rate the
    `schedule` (train.lr_schedule) trains at."""
    losses = [stats.loss for stats in (train, val) if stats.images]
    finite = all(math.isfinite(loss) for loss in losses)
    if finite and not val.images:
        finite = all(bool(torch.isfinite(p).all()) for p in net.parameters())
    if not finite:
        rate = (  # a constant schedule never reads max_learning_rate
            "train.learning_rate"
            if schedule == "constant"
            else "train.max_learning_rate (or train.learning_rate, where it starts)"
        )
        raise TrainingError(
            f"training diverged in epoch {epoch} (train loss {train.loss}, validation loss "
            f"{val.loss}): no model written; lower {rate} and train again"
        )
