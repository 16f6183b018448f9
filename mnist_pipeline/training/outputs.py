"""What a finished training leaves: the weights, the history (timings beside it) and the record
binding them to their inputs, replaced together."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from mnist_pipeline.core.atomic import atomic_paths, temp_files_of
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.reports import TrainRecord
from mnist_pipeline.data.manifest import file_sha256
from mnist_pipeline.model.weights import write_state_dict


def output_files(layout: Layout) -> tuple[Path, ...]:
    """Every file train replaces (its checkpoint too)."""
    return (
        layout.state_dict,
        layout.train_history,
        layout.train_timings,
        layout.train_record,
        layout.checkpoint,
    )


def remove_stale_temps(layout: Layout) -> list[Path]:
    """Delete the temp files of train's own outputs that a killed training left behind
    (`.model.pt.<random>.tmp.pt`, from a SIGKILL or a power cut); the caller holds the training
    lock, so no write of these is in progress. Other stages' temp files are left alone."""
    stale = [path for target in output_files(layout) for path in temp_files_of(target)]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def write_outputs(
    layout: Layout, net: nn.Module, history: str, timings: str, record: dict[str, Any]
) -> None:
    """Write model.pt, the history CSV text, the timings CSV text and model.json (`record`
    plus the SHA-256 of the weights and history written): every file in full before any
    replaces its target, the record last. A write that fails leaves the previous run's files
    as they were; a record left stale by a crash between the renames names other weights and
    is refused by every later stage."""
    targets = (layout.state_dict, layout.train_history, layout.train_timings, layout.train_record)
    with atomic_paths(*targets) as (weights, history_tmp, timings_tmp, record_tmp):
        write_state_dict(net, weights)
        history_tmp.write_text(history, encoding="utf-8")
        timings_tmp.write_text(timings, encoding="utf-8")
        hashes = {
            "state_dict_sha256": file_sha256(weights),
            "history_sha256": file_sha256(history_tmp),
        }
        record_tmp.write_text(TrainRecord.model_validate(record | hashes).text(), encoding="utf-8")
