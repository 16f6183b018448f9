"""Isolated run folders (runs/<name>/) and their pruning policy."""

from __future__ import annotations

import shutil
from pathlib import Path

from mnist_pipeline.layout import RUNS_DIR


def prune(project: Path, keep: int, current: Path | None = None) -> list[Path]:
    """Delete all but the `keep` newest run folders (by modification time); never `current`.

    Returns the folders deleted. A run that is still going has a fresh folder, so with `keep`
    at least the deployment's concurrency limit no running run loses its folder.
    """
    folder = project / RUNS_DIR
    if not folder.is_dir():
        return []
    runs = sorted(
        (p for p in folder.iterdir() if p.is_dir() and p != current),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    doomed = runs[max(keep - (current is not None), 0) :]
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed
