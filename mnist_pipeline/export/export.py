"""Export stage: trained weights -> one self-contained, consumer-friendly ONNX file.

The graph takes `image`, float32 [N, 1, 28, 28] with pixels in [0, 1] (white digit on black, as
MNIST), applies the training normalisation itself and returns `logits` and `probabilities`
(softmax), both [N, 10]. Batch norms are folded into their convolutions and no Dropout is left
(inference only). The batch dimension is dynamic; the opset is `export.opset`. Metadata
(`metadata_props`, readable with onnxruntime's `get_modelmeta().custom_metadata_map`) records
class labels, input and normalisation (mnist_pipeline/core/contract.py), and the run's dataset hash,
test accuracy and optional model version (`collect_metadata`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata as package_metadata
from pathlib import Path

import onnx
import torch
from torch import nn

import mnist_pipeline
from mnist_pipeline.core import atomic
from mnist_pipeline.core.contract import (
    CLASS_LABELS,
    INPUT_DESCRIPTION,
    INPUT_NAME,
    MNIST_MEAN,
    MNIST_STD,
    OUTPUT_DESCRIPTION,
    OUTPUT_NAMES,
    PREPROCESSING_DESCRIPTION,
    normalisation_json,
)
from mnist_pipeline.core.errors import GateError, ParamsError, PipelineError
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.params import EvaluateParams, ExportParams, ModelParams
from mnist_pipeline.core.reports import Metrics, read_report
from mnist_pipeline.core.text import printable
from mnist_pipeline.data.manifest import dataset_sha256, file_sha256
from mnist_pipeline.evaluation import gate
from mnist_pipeline.inbox import extra
from mnist_pipeline.model.network import fold_batch_norm
from mnist_pipeline.model.weights import load_model, load_model_and_hash

STACK_TRACE_KEY = "pkg.torch.onnx.stack_trace"


class InferenceModel(nn.Module):
    """`net` plus the training normalisation in front and a softmax behind (for export)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.net((image - MNIST_MEAN) / MNIST_STD)
        return logits, torch.softmax(logits, dim=1)


@dataclass(frozen=True)
class ExportResult:
    """The written ONNX file, its SHA-256 and size, its opset and its metadata_props."""

    onnx_path: Path
    sha256: str
    size_bytes: int
    opset: int
    metadata: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        return (
            f"exported {printable(str(self.onnx_path))} (opset {self.opset}, "
            f"{self.size_bytes:,} bytes, sha256 {self.sha256})"
        )


def _version(package: str) -> str:
    try:
        return package_metadata.version(package)
    except package_metadata.PackageNotFoundError:
        return "unknown"


def builtin_metadata(arch: str, opset: int) -> dict[str, str]:
    """The metadata every exported model carries (describes the graph and its producers)."""
    return {
        "arch": arch,
        "class_labels": json.dumps(list(CLASS_LABELS)),
        "input": INPUT_DESCRIPTION,
        "outputs": OUTPUT_DESCRIPTION,
        "normalisation": normalisation_json(),
        "preprocessing": PREPROCESSING_DESCRIPTION,
        "opset": str(opset),
        "producer_torch": torch.__version__,
        "producer_onnx": onnx.__version__,
        "producer_onnxscript": _version("onnxscript"),
        "producer_mnist_pipeline": mnist_pipeline.__version__,
    }


MAX_MODEL_VERSION = 100  # characters of `--model-version`, one line in the ONNX metadata


def checked_model_version(value: str | None) -> str | None:
    """`--model-version` if it is one line of printable UTF-8 text; ParamsError if not (it
    goes into the ONNX file's metadata, which other runtimes show)."""
    if value is None:
        return None
    if not value.strip():
        raise ParamsError("--model-version is blank: give the version to record, or leave it out")
    if len(value) > MAX_MODEL_VERSION:
        raise ParamsError(f"--model-version is longer than {MAX_MODEL_VERSION} characters")
    bad = next((c for c in value if not c.isprintable()), None)  # surrogates are not either
    if bad is not None:
        raise ParamsError(
            f"--model-version holds {bad!r} at {value.index(bad)}: give one line of printable "
            "text in UTF-8"
        )
    return value


def collect_metadata(
    accuracy: float, data_hash: str, weights_hash: str, model_version: str | None = None
) -> dict[str, str]:
    """The run-specific metadata: dataset hash, the hash of the weights exported, test accuracy,
    optional model version."""
    meta = {
        "training_data_sha256": data_hash,
        "state_dict_sha256": weights_hash,
        "test_accuracy": repr(float(accuracy)),
    }
    if model_version is not None:
        meta["model_version"] = str(model_version)
    return meta


def _to_onnx(model: nn.Module, opset: int) -> onnx.ModelProto:
    """Dynamo export with a dynamic batch dimension; exporter chatter is kept off stdout."""
    example = torch.rand(2, 1, 28, 28)
    with contextlib.redirect_stdout(io.StringIO()):
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes={INPUT_NAME: {0: torch.export.Dim("batch")}},
            opset_version=opset,
            external_data=False,
            verbose=False,
        )
    proto = program.model_proto
    # The exporter's per-node stack traces hold this checkout's absolute source paths: drop
    # them so the same weights give the same bytes anywhere (DVC hashes; no leaked paths).
    for node in proto.graph.node:
        kept = [(p.key, p.value) for p in node.metadata_props if p.key != STACK_TRACE_KEY]
        del node.metadata_props[:]
        for key, value in kept:
            node.metadata_props.add(key=key, value=value)
    return proto


def check_graph(proto: onnx.ModelProto, opset: int) -> None:
    """The interface consumers rely on: names, dynamic batch, opset, no Dropout left."""
    inputs = [i.name for i in proto.graph.input]
    outputs = [o.name for o in proto.graph.output]
    if inputs != [INPUT_NAME] or outputs != list(OUTPUT_NAMES):
        raise PipelineError(f"exported graph has inputs {inputs} and outputs {outputs}")
    batch = proto.graph.input[0].type.tensor_type.shape.dim[0]
    if not batch.dim_param:
        raise PipelineError("exported graph has a fixed batch dimension")
    got = {o.domain: o.version for o in proto.opset_import}.get("")
    if got != opset:
        raise PipelineError(f"exporter produced opset {got}, not the requested {opset}")
    training_only = {"Dropout", "BatchNormalization"} & {node.op_type for node in proto.graph.node}
    if training_only:
        raise PipelineError(
            f"exported graph still contains {', '.join(sorted(training_only))} "
            "(model not in eval mode, or a batch norm not folded into its convolution?)"
        )


def export_onnx(
    params: ExportParams,
    arch: str,
    weights: Path | str | nn.Module,
    onnx_path: Path,
    metadata: Mapping[str, str],
) -> ExportResult:
    """Export `arch` weights (a state_dict file, or the `arch` network loaded from one) to
    `onnx_path` (atomic; checked first)."""
    meta = builtin_metadata(arch, params.opset)
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"metadata must map str to str, got {key!r}: {value!r}")
        if key in meta:
            raise ValueError(f"metadata key {key!r} is set by the exporter itself")
        meta[key] = value
    if "test_accuracy" in meta and not math.isfinite(float(meta["test_accuracy"])):
        raise ValueError(f"test_accuracy must be a finite number, got {meta['test_accuracy']!r}")

    net = weights if isinstance(weights, nn.Module) else load_model(arch, Path(weights))
    model = InferenceModel(fold_batch_norm(net)).eval()
    proto = _to_onnx(model, params.opset)
    proto.doc_string = (
        f"MNIST digit classifier ({arch}). {INPUT_DESCRIPTION}. {OUTPUT_DESCRIPTION}."
    )
    proto.graph.input[0].doc_string = INPUT_DESCRIPTION
    del proto.metadata_props[:]
    for key, value in sorted(meta.items()):
        proto.metadata_props.add(key=key, value=value)
    check_graph(proto, params.opset)

    with atomic.atomic_path(onnx_path) as tmp:
        onnx.save_model(proto, tmp, save_as_external_data=False)
        written = tmp.read_bytes()  # checked as read back (onnx's checker takes only UTF-8 paths)
        try:
            onnx.checker.check_model(onnx.load_model_from_string(written), full_check=True)
        except onnx.checker.ValidationError as exc:
            raise PipelineError(f"exported model fails onnx.checker: {exc}") from None
        sha256 = hashlib.sha256(written).hexdigest()
        size = len(written)
    return ExportResult(onnx_path, sha256, size, params.opset, meta)


def outputs_found(metrics: Metrics, layout: Layout) -> dict[str, str | None]:
    """SHA-256 now of each file the evaluation report lists (None: missing)."""
    paths = {rel: layout.root / rel for rel in metrics.outputs or {}}
    return {rel: file_sha256(p) if p.is_file() else None for rel, p in paths.items()}


def export(
    model: ModelParams,
    params: ExportParams,
    evaluate: EvaluateParams,
    layout: Layout,
    model_version: str | None = None,
) -> ExportResult:
    """Stage entry: export layout.state_dict to layout.onnx, only if evaluation passed the gate,
    and passes the gates params set now (`evaluate`: a gate raised since evaluate ran).

    The evaluation report must also describe the dataset in layout.data_dir (not a stale one).
    """
    model_version = checked_model_version(model_version)  # before anything is read
    metrics = read_report(Metrics, layout.metrics, "evaluate")
    data_hash = dataset_sha256(layout.data_dir)
    net, weights_hash = load_model_and_hash(model.arch, layout.state_dict)  # what is exported
    where = str(layout.metrics)
    try:
        accuracy = gate.evaluation_passed(metrics, where, evaluate.min_accuracy)
        gate.extra_passed(metrics, where, evaluate.min_extra_accuracy)
        gate.made_from(metrics.state_dict_sha256, weights_hash, where, "model.pt", "evaluate")
        gate.made_from(metrics.dataset_sha256, data_hash, where, "dataset", "evaluate")
        # an ingest since evaluate (a holdout never scored): evaluate again, as registration says
        ingested = extra.extra_sha256(layout.extra_dir)
        gate.made_from(metrics.extra.extra_sha256, ingested, where, "ingested digits", "evaluate")
        gate.outputs_made_with(metrics.outputs, outputs_found(metrics, layout), where, "evaluate")
    except GateError as exc:
        raise GateError(f"refusing to export: {exc}") from None
    metadata = collect_metadata(accuracy, data_hash, weights_hash, model_version)
    atomic.check_targets(layout.onnx)  # a folder there, or one taking no file: said before the work
    return export_onnx(params, model.arch, net, layout.onnx, metadata)
