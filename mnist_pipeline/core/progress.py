"""Training progress on stderr: a rich bar per epoch on a terminal, one plain line otherwise."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

OnBatch = Callable[[int, float, float], None]
UPDATE_EVERY = 10  # batches between bar refreshes


def log(message: str) -> None:
    """One plain progress line on stderr."""
    print(message, file=sys.stderr, flush=True)


def epoch_line(row: dict[str, float], images_per_second: float) -> str:
    """The one-line summary of a finished epoch."""
    return (
        f"epoch {int(row['epoch'])}: train loss {row['train_loss']:.4f} "
        f"acc {row['train_accuracy']:.4f} | val loss {row['val_loss']:.4f} "
        f"acc {row['val_accuracy']:.4f} | lr {row['lr']:.2e} | "
        f"{row['seconds']:.1f} s, {images_per_second:,.0f} img/s"
    )


class EpochReporter:
    """Shows each epoch's progress; a bar only when stderr is a terminal."""

    def __init__(self, epochs: int, images_per_epoch: int, live: bool | None = None) -> None:
        self.epochs = epochs
        self.images_per_epoch = images_per_epoch
        self.live = sys.stderr.isatty() if live is None else live
        self.console = Console(stderr=True, highlight=False)
        self._started = 0.0

    @contextmanager
    def epoch(self, epoch: int) -> Iterator[OnBatch | None]:
        """Context for one epoch; yields the per-batch callback (None when not live)."""
        self._started = time.perf_counter()
        if not self.live:
            yield None
            return
        progress = Progress(
            TextColumn(f"epoch {epoch}/{self.epochs}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f} acc {task.fields[acc]:.4f}"),
            TextColumn("{task.fields[rate]:,.0f} img/s"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        task = progress.add_task("train", total=self.images_per_epoch, loss=0.0, acc=0.0, rate=0.0)
        calls = 0

        def on_batch(n: int, loss: float, accuracy: float) -> None:
            nonlocal calls
            calls += 1
            progress.advance(task, n)
            completed = progress.tasks[0].completed
            # every UPDATE_EVERY batches, and the first and last: a short epoch shows figures too
            if calls == 1 or calls % UPDATE_EVERY == 0 or completed >= self.images_per_epoch:
                rate = completed / max(time.perf_counter() - self._started, 1e-9)
                progress.update(task, loss=loss, acc=accuracy, rate=rate)

        with progress:
            yield on_batch

    def done(self, row: dict[str, float], images: int) -> None:
        """Print the finished epoch's summary line."""
        rate = images / max(time.perf_counter() - self._started, 1e-9)
        self.console.print(epoch_line(row, rate), markup=False, soft_wrap=True)
