"""A registration candidate: the files one pipeline run produced, and the checks they must pass."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnist_pipeline import gate
from mnist_pipeline.errors import PipelineError, RegistryError
from mnist_pipeline.layout import Layout
from mnist_pipeline.params import Params

ONNX_FILE = "model.onnx"
STATE_DICT_FILE = "model.pt"
METRICS_FILE = "metrics.json"
PARITY_FILE = "parity.json"
HISTORY_FILE = "train_history.csv"
PLOTS_DIR = "plots"


@dataclass(frozen=True)
class Candidate:
    """Paths of what to register; `workdir` is where git is asked for lineage; `fingerprint`
    is the run's inputs fingerprint (fingerprint.py), recorded in the card."""

    onnx: Path
    state_dict: Path
    metrics: Path
    parity: Path
    plots: tuple[Path, ...] = ()
    train_history: Path | None = None
    workdir: Path | None = None
    fingerprint: dict[str, Any] | None = None

    def files(self) -> dict[str, Path]:
        """Where each source file goes inside the version folder."""
        files = {
            ONNX_FILE: self.onnx,
            STATE_DICT_FILE: self.state_dict,
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

    def missing(self) -> list[Path]:
        return [path for path in self.files().values() if not path.is_file()]


def candidate_from_layout(layout: Layout) -> Candidate:
    """What the pipeline last produced under `layout` (errors name the stage that is missing)."""
    needed = {
        layout.onnx: "export",
        layout.state_dict: "train",
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
        metrics=layout.metrics,
        parity=layout.parity_report,
        plots=plots,
        train_history=history,
        workdir=layout.project,
    )


def check_reports(metrics: Any, parity: Any, onnx_sha256: str, params: Params) -> float:
    """The candidate's accuracy, if its recorded verdicts pass today's gate (gate.py).

    Refuses (GateError) a model that failed evaluation or parity, whose parity report checked
    another ONNX file, or whose verdicts were reached under a laxer gate than params sets now.
    """
    if not isinstance(metrics, dict) or not isinstance(parity, dict):
        raise RegistryError("metrics and parity reports must be JSON objects")
    try:
        accuracy = gate.evaluation_passed(metrics, METRICS_FILE, params.evaluate.min_accuracy)
        gate.parity_passed(parity, onnx_sha256, PARITY_FILE, params.parity.atol)
    except PipelineError as exc:
        raise type(exc)(f"refusing to register: {exc}") from None
    return accuracy
