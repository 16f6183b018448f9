"""Parity stage: the ONNX file must compute what the PyTorch model computes.

onnxruntime runs the exported graph on the whole test set (pixels / 255, normalisation inside
the graph) at the full-set batch size and at each of `parity.batch_sizes`; PyTorch runs the
trained weights in eval mode on `dataset.normalise(images)`, the path training and evaluation
use. Gate (gate.parity_passes): for every run, max |logits diff| and max |probabilities diff|
<= `parity.atol` and the same argmax on every image. A second, independent check runs the first
`REFERENCE_IMAGES` images through onnx.reference.ReferenceEvaluator (pure numpy ONNX semantics).

`max_rel_diff_logits` (reported, not gated) is max |onnx - torch| / max(|torch|, 1e-3).
The report is written before a failure is raised.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx.reference import ReferenceEvaluator
from torch import nn

import mnist_pipeline
from mnist_pipeline.core.atomic import json_bytes, write_many
from mnist_pipeline.core.contract import INPUT_NAME, OUTPUT_NAMES
from mnist_pipeline.core.errors import GateError, PipelineError
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.params import ModelParams, ParityParams
from mnist_pipeline.core.regular_file import read_regular
from mnist_pipeline.core.reports import Parity
from mnist_pipeline.core.text import printable
from mnist_pipeline.data.dataset import load_mnist, normalise, require_test_images
from mnist_pipeline.evaluation import gate
from mnist_pipeline.evaluation.gate import parity_passes
from mnist_pipeline.export.session import model_input, open_session, run_model
from mnist_pipeline.model.network import predict_logits
from mnist_pipeline.model.weights import load_model_and_hash

REFERENCE_IMAGES = 16
TORCH_BATCH = 1000
REL_FLOOR = 1e-3


@dataclass(frozen=True)
class ParityResult:
    """Outcome of a passed `check_parity` (the full record is the JSON report)."""

    max_abs_diff_logits: float
    max_abs_diff_probabilities: float
    argmax_mismatches: int
    images: int
    onnx_sha256: str
    report_path: Path

    def summary(self) -> str:
        return (
            f"parity passed on {self.images} images: max |logits diff| "
            f"{self.max_abs_diff_logits:.3g}, max |probabilities diff| "
            f"{self.max_abs_diff_probabilities:.3g}; report {printable(str(self.report_path))}"
        )


def _torch_outputs(net: nn.Module, images: torch.Tensor) -> np.ndarray:
    logits = predict_logits(net, normalise(images), TORCH_BATCH)
    return logits.numpy().astype(np.float64)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _ort_outputs(session: ort.InferenceSession, pixels: np.ndarray, batch: int, where: str):
    logits, probs = [], []
    for start in range(0, len(pixels), batch):
        feeds = {INPUT_NAME: pixels[start : start + batch]}
        out = run_model(session, list(OUTPUT_NAMES), feeds, where)
        logits.append(out[0])
        probs.append(out[1])
    return np.concatenate(logits).astype(np.float64), np.concatenate(probs).astype(np.float64)


def _max(values: np.ndarray) -> float:
    """Max of a diff array; NaN anywhere counts as infinitely different."""
    return math.inf if np.isnan(values).any() else float(values.max(initial=0.0))


def _compare(logits: np.ndarray, probs: np.ndarray, ref_logits: np.ndarray) -> dict[str, Any]:
    diff = np.abs(logits - ref_logits)
    return {
        "max_abs_diff_logits": _max(diff),
        "max_abs_diff_probabilities": _max(np.abs(probs - _softmax(ref_logits))),
        "max_rel_diff_logits": _max(diff / np.maximum(np.abs(ref_logits), REL_FLOOR)),
        "argmax_mismatches": int((logits.argmax(axis=1) != ref_logits.argmax(axis=1)).sum()),
    }


def _json_number(value: float) -> float | None:
    return value if math.isfinite(value) else None  # JSON has no Infinity; null = "unbounded"


def _load_onnx(onnx_path: Path) -> bytes:
    try:
        return read_regular(onnx_path)  # a pipe there: refused, not waited on
    except FileNotFoundError:
        raise PipelineError(f"no ONNX model at {onnx_path}: run `mnist-pipeline export`") from None


def check_parity(
    params: ParityParams,
    arch: str,
    state_dict_path: Path,
    onnx_path: Path,
    data_dir: Path,
    report_path: Path,
    scores_path: Path | None = None,
) -> ParityResult:
    """Compare ONNX (onnxruntime + reference evaluator) with PyTorch on the whole test set."""
    model_bytes = _load_onnx(onnx_path)  # hash and run the very same bytes
    onnx_sha256 = hashlib.sha256(model_bytes).hexdigest()
    session = open_session(model_bytes, where=str(onnx_path), outputs=OUTPUT_NAMES)
    net, weights_sha256 = load_model_and_hash(arch, state_dict_path)  # the weights compared
    exported_from = session.get_modelmeta().custom_metadata_map
    if "state_dict_sha256" in exported_from:  # our exports record it; a foreign ONNX may not
        recorded = exported_from["state_dict_sha256"]
        gate.made_from(recorded, weights_sha256, str(onnx_path), "model.pt", "export")

    images = require_test_images(load_mnist(data_dir), data_dir, "parity").test_images
    ref_logits = _torch_outputs(net, images)
    pixels = model_input(images.numpy())

    batch_sizes = list(dict.fromkeys([len(pixels), *params.batch_sizes]))
    runs, mismatched = {}, np.zeros(len(pixels), bool)  # images whose digit differed anywhere
    for batch in batch_sizes:
        logits, probabilities = _ort_outputs(session, pixels, batch, str(onnx_path))
        runs[str(batch)] = _compare(logits, probabilities, ref_logits)
        mismatched |= logits.argmax(axis=1) != ref_logits.argmax(axis=1)

    few = pixels[:REFERENCE_IMAGES]
    try:  # operators onnx.reference does not know (a graph optimised by onnxruntime)
        ref_eval = ReferenceEvaluator(onnx.load_from_string(model_bytes))
        ref_out = ref_eval.run(list(OUTPUT_NAMES), {INPUT_NAME: few})
    except Exception as exc:  # onnx raises whatever its operators do
        raise PipelineError(f"onnx.reference cannot evaluate {onnx_path}: {exc}") from None
    few_logits = np.asarray(ref_out[0], np.float64)
    reference = _compare(few_logits, np.asarray(ref_out[1], np.float64), ref_logits[: len(few)])
    reference["images"] = len(few)
    mismatched[: len(few)] |= few_logits.argmax(axis=1) != ref_logits[: len(few)].argmax(axis=1)

    worst = {
        key: max(run[key] for run in [*runs.values(), reference])
        for key in ("max_abs_diff_logits", "max_abs_diff_probabilities", "max_rel_diff_logits")
    }
    mismatches = int(mismatched.sum())  # each image once, however many runs it differed in
    atol = params.atol
    passed = parity_passes(
        worst["max_abs_diff_logits"], worst["max_abs_diff_probabilities"], mismatches, atol
    )
    report = {
        "passed": passed,
        **{key: _json_number(value) for key, value in worst.items()},
        "argmax_mismatches": mismatches,
        "images": len(pixels),
        "batch_sizes": batch_sizes,
        "atol": atol,
        "onnx_sha256": onnx_sha256,
        "state_dict_sha256": weights_sha256,
        "onnx_path": str(onnx_path),
        "per_batch_size": {
            b: {k: _json_number(v) if isinstance(v, float) else v for k, v in run.items()}
            for b, run in runs.items()
        },
        "reference_evaluator": {
            k: _json_number(v) if isinstance(v, float) else v for k, v in reference.items()
        },
        "versions": {
            "onnxruntime": ort.__version__,
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "numpy": np.__version__,
            "mnist_pipeline": mnist_pipeline.__version__,
        },
    }
    files = {report_path: Parity.model_validate(report).text().encode()}
    if scores_path is not None:  # the headline numbers alone, for `dvc metrics`
        # Short names: `dvc metrics show` puts every metric of every file in one table.
        headline = {"passed": "passed", "max_logit_diff": "max_abs_diff_logits"}
        headline["argmax_mismatches"] = "argmax_mismatches"
        files[scores_path] = json_bytes({short: report[key] for short, key in headline.items()})
    write_many(files)  # both or neither: the scores never tell of another check than the report
    result = ParityResult(
        max_abs_diff_logits=worst["max_abs_diff_logits"],
        max_abs_diff_probabilities=worst["max_abs_diff_probabilities"],
        argmax_mismatches=mismatches,
        images=len(pixels),
        onnx_sha256=onnx_sha256,
        report_path=report_path,
    )
    if not passed:
        raise GateError(
            f"ONNX parity failed for {onnx_path}: max |logits diff| "
            f"{worst['max_abs_diff_logits']:.3g}, max |probabilities diff| "
            f"{worst['max_abs_diff_probabilities']:.3g} (atol {atol:g}), "
            f"{mismatches} argmax mismatch(es) over {len(pixels)} images; report: {report_path}"
        )
    return result


def parity(model: ModelParams, params: ParityParams, layout: Layout) -> ParityResult:
    """Stage entry: check layout.onnx against layout.state_dict; report to layout.parity_report."""
    return check_parity(
        params,
        model.arch,
        layout.state_dict,
        layout.onnx,
        layout.data_dir,
        layout.parity_report,
        layout.parity_scores,
    )
