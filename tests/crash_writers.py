"""The pipeline's file writers and readers, one per kind of file, for crash tests.

`WRITERS[kind](path, seed)` writes a file of that kind the way the pipeline does (through
core.atomic); `READERS[kind](path)` reads it back the way the next stage does and raises on a
damaged file. Run as a script, this module writes one file in a child process that then crashes
or fails at a chosen point (`python -m tests.crash_writers KIND MODE PATH SEED [LIMIT]`):

- ``half``: the file-size limit is set to LIMIT bytes and SIGXFSZ left at its default action,
  so the kernel kills the writer part-way through its bytes;
- ``fsync-error`` / ``rename-error``: os.fsync / os.replace raise EIO (the write fails);
- ``fsync-crash`` / ``rename-crash``: the process kills itself with SIGKILL at that call;
- ``full``: the file-size limit is set to LIMIT bytes with SIGXFSZ ignored, so a write past it
  fails (EFBIG) as on a full disk; the error ends the process as the CLI ends it (one line,
  exit status 74).
Imports are lazy: a child pays for torch only when its kind needs it.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np


def _model(path: Path, seed: int) -> None:
    import torch

    from mnist_pipeline.model.network import build_model
    from mnist_pipeline.model.weights import save_state_dict

    torch.manual_seed(seed)
    save_state_dict(build_model("classic"), path)


def _checkpoint(path: Path, seed: int) -> None:
    import torch

    from mnist_pipeline.training import checkpoint

    weights = torch.rand(64, 64, generator=torch.Generator().manual_seed(seed))
    state = {"identity": _identity(seed), "model": {"w": weights}}
    checkpoint.save(path, state)


def _identity(seed: int) -> dict:
    return {"params": {"seed": seed}, "dataset_sha256": "0" * 64}


def _idx(path: Path, seed: int) -> None:
    from mnist_pipeline.core.atomic import write_bytes
    from mnist_pipeline.data import idx

    images = np.random.default_rng(seed).integers(0, 256, (120, 28, 28), dtype=np.uint8)
    write_bytes(path, idx.encode_idx(images))


def _csv(path: Path, seed: int) -> None:
    import torch

    from mnist_pipeline.core.atomic import write_text
    from mnist_pipeline.evaluation.report import predictions_csv

    rng = torch.Generator().manual_seed(seed)
    actual, predicted = (torch.randint(0, 10, (3000,), generator=rng) for _ in range(2))
    write_text(path, predictions_csv(actual, predicted, torch.rand(3000, generator=rng)))


def _json(path: Path, seed: int) -> None:
    from mnist_pipeline.core.reports import Metrics
    from tests.reports import metrics_report

    matrix = np.random.default_rng(seed).integers(0, 1000, (10, 10)).tolist()
    Metrics.model_validate(metrics_report(confusion_matrix=matrix)).write(path)


def _png(path: Path, seed: int) -> None:
    import torch

    from mnist_pipeline.evaluation.plots import plot_confusion

    counts = torch.randint(0, 1000, (10, 10), generator=torch.Generator().manual_seed(seed))
    plot_confusion(counts, path)


def _read_model(path: Path) -> None:
    from mnist_pipeline.model.weights import load_model

    load_model("classic", path)


def _read_checkpoint(path: Path) -> None:
    from mnist_pipeline.training import checkpoint

    state = checkpoint.load(path, _identity(1)) or checkpoint.load(path, _identity(2))
    assert state is not None and state["model"]["w"].shape == (64, 64)  # None: unreadable


def _read_idx(path: Path) -> None:
    from mnist_pipeline.data import idx

    assert idx.parse_images(path.read_bytes(), path.name).shape == (120, 28, 28)


def _read_csv(path: Path) -> None:
    import csv

    rows = list(csv.DictReader(path.read_text().splitlines()))
    assert len(rows) == 3000 and all(0 <= float(row["confidence"]) <= 1 for row in rows)


def _read_json(path: Path) -> None:
    from mnist_pipeline.core.reports import Metrics, read_report

    read_report(Metrics, path, "evaluate")


def _read_png(path: Path) -> None:
    from PIL import Image

    with Image.open(path) as image:
        image.load()


WRITERS: dict[str, Callable[[Path, int], None]] = {
    "model.pt": _model,
    "checkpoint.pt": _checkpoint,
    "images.idx": _idx,
    "predictions.csv": _csv,
    "metrics.json": _json,
    "plot.png": _png,
}
READERS: dict[str, Callable[[Path], None]] = {
    "model.pt": _read_model,
    "checkpoint.pt": _read_checkpoint,
    "images.idx": _read_idx,
    "predictions.csv": _read_csv,
    "metrics.json": _read_json,
    "plot.png": _read_png,
}


def _fault(how: str) -> Callable:
    def faulty(*args, **kwargs):
        if how == "crash":
            os.kill(os.getpid(), signal.SIGKILL)
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    return faulty


def main(kind: str, mode: str, path: str, seed: str, limit: str = "0") -> None:
    """Write `path` in this process and fail or crash as `mode` says."""
    import resource
    import tempfile

    # Import what the writer needs before the limit applies to every file this process writes.
    WRITERS[kind](Path(tempfile.mkdtemp()) / kind, int(seed))
    if mode in ("half", "full"):
        if mode == "half":
            signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # Python ignores it: EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (int(limit), int(limit)))
    elif mode != "none":
        call, how = mode.split("-")
        name = {"fsync": "fsync", "rename": "replace"}[call]
        setattr(os, name, _fault(how))
    from mnist_pipeline.core.errors import one_line_errors

    with one_line_errors():
        WRITERS[kind](Path(path), int(seed))


if __name__ == "__main__":
    main(*sys.argv[1:])
