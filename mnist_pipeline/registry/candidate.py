"""A registration candidate: the files one pipeline run produced, and the checks they must pass."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnist_pipeline.errors import RegistryError
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
    """Paths of what to register; `workdir` is where git and dvc.lock are read for lineage."""

    onnx: Path
    state_dict: Path
    metrics: Path
    parity: Path
    plots: tuple[Path, ...] = ()
    train_history: Path | None = None
    workdir: Path | None = None

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
        workdir=layout.root,
    )


def _number(report: dict[str, Any], key: str, where: str) -> float:
    value = report.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RegistryError(f"{where}: {key!r} must be a finite number, got {value!r}")
    return float(value)


def check_reports(metrics: Any, parity: Any, onnx_sha256: str, params: Params) -> float:
    """Refuse a candidate that failed the gate or parity, or whose parity checked another file.

    Returns its accuracy.
    """
    if not isinstance(metrics, dict) or not isinstance(parity, dict):
        raise RegistryError("metrics and parity reports must be JSON objects")
    accuracy = _number(metrics, "accuracy", METRICS_FILE)
    if metrics.get("passed") is not True:
        raise RegistryError(
            f"refusing to register: the model did not pass the accuracy gate "
            f"(accuracy {accuracy:.4f}, min_accuracy {metrics.get('min_accuracy')!r})"
        )
    gate = params.evaluate.min_accuracy
    if accuracy < gate:
        raise RegistryError(
            f"refusing to register: accuracy {accuracy:.4f} is below evaluate.min_accuracy {gate}"
        )
    if parity.get("passed") is not True:
        raise RegistryError(
            "refusing to register: the ONNX parity check failed "
            f"(max_abs_diff_logits {parity.get('max_abs_diff_logits')!r}, "
            f"argmax_mismatches {parity.get('argmax_mismatches')!r})"
        )
    if parity.get("onnx_sha256") != onnx_sha256:
        raise RegistryError(
            "refusing to register: the parity report checked a different ONNX file "
            f"(report onnx_sha256 {parity.get('onnx_sha256')!r}, file to register "
            f"{onnx_sha256}); run `mnist-pipeline parity` again"
        )
    atol = _number(parity, "atol", PARITY_FILE)
    if atol > params.export.parity_atol:
        raise RegistryError(
            f"refusing to register: parity was checked with atol {atol}, looser than "
            f"export.parity_atol {params.export.parity_atol}"
        )
    return accuracy
