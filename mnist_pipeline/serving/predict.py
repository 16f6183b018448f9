"""Predict: classify image files with the exported ONNX model (onnxruntime only, torch-free).

Nothing on this path imports torch (a test checks it): preprocessing is
mnist_pipeline.data.preprocess (numpy + Pillow), the model runs in onnxruntime, and the
registry is torch-free.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import onnxruntime as ort

from mnist_pipeline.core.contract import IMAGE_SIZE, INPUT_NAME, NUM_CLASSES, PROBABILITIES
from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.regular_file import NOT_REGULAR
from mnist_pipeline.core.service_params import RegistryParams
from mnist_pipeline.data.preprocess import ImageError, preprocess_file
from mnist_pipeline.export.session import open_session, run_model

BATCH = 256


@dataclass(frozen=True)
class Prediction:
    """One file's outcome: the digit, its probability and the top classes, or an error."""

    file: str
    digit: int | None = None
    probability: float | None = None
    top: tuple[tuple[int, float], ...] = ()
    error: str | None = None

    def to_dict(self, with_top: bool) -> dict[str, Any]:
        """JSON form: file + digit + probability (+ top), or file + error."""
        if self.error is not None:
            return {"file": self.file, "error": self.error}
        out: dict[str, Any] = {
            "file": self.file,
            "digit": self.digit,
            "probability": self.probability,
        }
        if with_top:
            out["top"] = [{"digit": d, "probability": p} for d, p in self.top]
        return out


@dataclass(frozen=True)
class PredictResult:
    """The model file used and one prediction per input file, in input order."""

    model_path: Path
    predictions: tuple[Prediction, ...]

    @property
    def failed(self) -> int:
        return sum(p.error is not None for p in self.predictions)


def is_model_path(ref: str | None) -> bool:
    """Whether a --model value names a file (ends in .onnx or has a slash), not a registry ref."""
    return ref is not None and (ref.endswith(".onnx") or "/" in ref or "\\" in ref)


class ModelChoice(NamedTuple):
    """The ONNX file to use and what it is, for people: a path, or `mnist-cnn v3 (production)`
    for a verified copy of a registered version."""

    path: Path
    label: str


def resolve_model(ref: str | None, layout: Layout, registry: RegistryParams | None) -> ModelChoice:
    """The ONNX file to use.

    `ref` is a path (ends in .onnx or contains a slash) or a registry reference (a version
    number or an alias such as `production`). Without `ref`: the registry's production model
    if there is one, else layout.onnx.
    """
    if ref is not None and is_model_path(ref):
        path = Path(ref)
        if path.is_dir():
            raise PipelineError(f"{path} is a folder, not an ONNX file")
        if path.exists() and not path.is_file():
            raise PipelineError(f"{path}: {NOT_REGULAR}")
        if not path.is_file():
            raise PipelineError(f"model file not found: {path}")
        return ModelChoice(path, str(path))
    if registry is None:
        raise ValueError("a registry reference needs the registry params")
    from mnist_pipeline.pipeline.versions import ONNX_FILE, open_registry  # torch-free
    from mnist_pipeline.registry import PRODUCTION, keys

    models = open_registry(registry, layout)
    if ref is None and PRODUCTION in models.aliases():
        ref = PRODUCTION
    if ref is not None:
        version = models.version_of(ref)  # once: the label names the version fetched
        named = "" if keys.REF_VERSION_RE.fullmatch(ref.strip()) else f" ({ref})"
        return ModelChoice(models.fetch(version, ONNX_FILE), f"{models.name} v{version}{named}")
    if layout.onnx.is_file():
        return ModelChoice(layout.onnx, f"{layout.onnx} (the registry has no production version)")
    raise PipelineError(
        f"no model: the registry {models.location} has no production version and "
        f"{layout.onnx} does not exist; run `mnist-pipeline export` or pass --model"
    )


def classify(
    session: ort.InferenceSession, digits: np.ndarray, where: str = "the ONNX model"
) -> np.ndarray:
    """float32 [N, 28, 28] preprocessed digits -> probabilities [N, 10] (PipelineError naming
    `where` when onnxruntime cannot run the model)."""
    batches = [
        run_model(session, [PROBABILITIES], {INPUT_NAME: digits[i : i + BATCH, None]}, where)[0]
        for i in range(0, len(digits), BATCH)
    ]
    return np.concatenate(batches) if batches else np.zeros((0, NUM_CLASSES), np.float32)


def top_digits(probabilities: np.ndarray, top: int) -> tuple[tuple[int, float], ...]:
    """The `top` most probable (digit, probability) pairs, ties in digit order."""
    order = np.argsort(-probabilities, kind="stable")[:top]
    return tuple((int(d), float(probabilities[d])) for d in order)


def predict_files(model_path: Path, files: Sequence[Path], top: int = 1) -> PredictResult:
    """Classify each file; a bad file gets an error entry and the others are still classified."""
    if not 1 <= top <= NUM_CLASSES:
        raise ValueError(f"top must be between 1 and {NUM_CLASSES}, got {top}")
    session = open_session(model_path)
    errors: dict[int, str] = {}
    good: list[int] = []
    digits: list[np.ndarray] = []
    for index, path in enumerate(files):
        try:
            digits.append(preprocess_file(Path(path)))
            good.append(index)
        except ImageError as exc:
            errors[index] = str(exc)
    stacked = np.stack(digits) if digits else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.float32)
    probabilities = classify(session, stacked, str(model_path))
    by_index = dict(zip(good, probabilities, strict=True))
    predictions = []
    for index, path in enumerate(files):
        if index in errors:
            predictions.append(Prediction(file=str(path), error=errors[index]))
            continue
        ranked = top_digits(by_index[index], top)
        predictions.append(
            Prediction(file=str(path), digit=ranked[0][0], probability=ranked[0][1], top=ranked)
        )
    return PredictResult(model_path, tuple(predictions))
