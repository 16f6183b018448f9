"""A registration candidate: the files one pipeline run produced, and the checks they must pass
before the registry is asked to keep them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnist_pipeline.core.errors import PipelineError, RegistryError
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.params import Params
from mnist_pipeline.evaluation import gate
from mnist_pipeline.pipeline.versions import (
    HISTORY_FILE,
    METRICS_FILE,
    ONNX_FILE,
    PARITY_FILE,
    PLOTS_DIR,
    STATE_DICT_FILE,
    TRAIN_RECORD_FILE,
)


@dataclass(frozen=True)
class Candidate:
    """Paths of what to register; `workdir` is where git is asked for lineage. The training
    record (train.py) binds model.pt to its inputs fingerprint and the params it was trained
    with; the card takes both from it."""

    onnx: Path
    state_dict: Path
    train_record: Path
    metrics: Path
    parity: Path
    plots: tuple[Path, ...] = ()
    train_history: Path | None = None
    workdir: Path | None = None
    extra_dir: Path | None = None  # the ingested extra data: promotion re-scores its holdout

    def files(self) -> dict[str, Path]:
        """Where each source file goes inside the version folder."""
        files = {
            ONNX_FILE: self.onnx,
            STATE_DICT_FILE: self.state_dict,
            TRAIN_RECORD_FILE: self.train_record,
            METRICS_FILE: self.metrics,
            PARITY_FILE: self.parity,
        }
        if self.train_history is not None:
            files[HISTORY_FILE] = self.train_history
        for plot in self.plots:
            rel = f"{PLOTS_DIR}/{plot.name}"
            if rel in files:
                raise RegistryError(f"two candidate plots are both named {plot.name!r}")
            files[rel] = plot
        return files

    def read(self) -> dict[str, bytes]:
        """Every file's bytes, read once (the checks and the registry see the same bytes)."""
        contents, missing = {}, []
        for rel, path in self.files().items():
            try:
                contents[rel] = path.read_bytes()
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                missing.append(str(path))
        if missing:
            raise RegistryError("candidate files not found: " + ", ".join(missing))
        return contents


def candidate_from_layout(layout: Layout) -> Candidate:
    """What the pipeline last produced under `layout` (errors name the stage that is missing)."""
    needed = {
        layout.onnx: "export",
        layout.state_dict: "train",
        layout.train_record: "train",
        layout.metrics: "evaluate",
        layout.parity_report: "parity",
    }
    missing = [
        f"{path} (run `mnist-pipeline {stage}`)"
        for path, stage in needed.items()
        if not path.is_file()
    ]
    if missing:
        raise RegistryError("nothing to register; missing: " + "; ".join(missing))
    plots = tuple(sorted(layout.plots.glob("*.png"))) if layout.plots.is_dir() else ()
    history = layout.train_history if layout.train_history.is_file() else None
    return Candidate(
        onnx=layout.onnx,
        state_dict=layout.state_dict,
        train_record=layout.train_record,
        metrics=layout.metrics,
        parity=layout.parity_report,
        plots=plots,
        train_history=history,
        workdir=layout.project,
        extra_dir=layout.extra_dir,
    )


def check_reports(
    reports: dict[str, Any], hashes: dict[str, str], params: Params
) -> tuple[float, Params]:
    """The candidate's accuracy and the params its weights were trained with, if the chain holds.

    `reports` maps METRICS_FILE, PARITY_FILE and TRAIN_RECORD_FILE to their parsed JSON and
    `hashes` every stored file to its SHA-256. Refuses (GateError) a model that failed evaluation
    or parity, whose verdicts were reached under a laxer gate than params sets now, or any report
    made from other files than these: metrics and parity for another model.pt, parity for another
    model.onnx, the training record for another model.pt.
    """
    if not all(isinstance(report, dict) for report in reports.values()):
        raise RegistryError("metrics, parity and training reports must be JSON objects")
    metrics, parity, record = (reports[f] for f in (METRICS_FILE, PARITY_FILE, TRAIN_RECORD_FILE))
    weights = hashes[STATE_DICT_FILE]
    try:
        accuracy = gate.evaluation_passed(metrics, METRICS_FILE, params.evaluate.min_accuracy)
        gate.extra_passed(metrics, METRICS_FILE, params.evaluate.min_extra_accuracy)
        gate.parity_passed(parity, hashes[ONNX_FILE], PARITY_FILE, params.parity.atol)
        for name, report, stage in (
            (TRAIN_RECORD_FILE, record, "train"),
            (METRICS_FILE, metrics, "evaluate"),
            (PARITY_FILE, parity, "parity"),
        ):
            gate.made_from(report, "state_dict_sha256", weights, name, STATE_DICT_FILE, stage)
    except PipelineError as exc:
        raise type(exc)(f"refusing to register: {exc}") from None
    return accuracy, trained_params(record, params)


def trained_params(record: dict[str, Any], params: Params) -> Params:
    """`params` with the `model` and `train` sections the weights were trained with."""
    try:
        sections = record["fingerprint"]["params"]
        return params.model_copy(
            update={
                "model": type(params.model).model_validate(sections["model"]),
                "train": type(params.train).model_validate(sections["train"]),
            }
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise RegistryError(f"{TRAIN_RECORD_FILE}: no valid training params ({exc})") from None
