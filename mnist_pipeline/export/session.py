"""One way to run an exported model in onnxruntime: predict, serve, parity and promotion use it.

CPU provider, warnings-only logging, optional thread count, and the contract's interface checked
before anything runs. Torch-free (predict and serve must not import torch).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from mnist_pipeline.core.contract import IMAGE_SIZE, INPUT_NAME, NUM_CLASSES, PROBABILITIES
from mnist_pipeline.core.errors import PipelineError

PROVIDERS = ["CPUExecutionProvider"]


def open_session(
    model: bytes | Path,
    *,
    where: str | None = None,
    threads: int | None = None,
    outputs: tuple[str, ...] = (PROBABILITIES,),
) -> ort.InferenceSession:
    """An onnxruntime CPU session for a model file or its bytes, refused (PipelineError naming
    `where`) unless it loads and has the contract's input and the named `outputs`.
    `threads` sets intra-op threads (1 where requests already run in parallel threads)."""
    label = where or (str(model) if isinstance(model, Path) else "the ONNX model")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = threads
    try:  # a path's bytes: onnxruntime takes only a path it can encode as UTF-8
        source = model.read_bytes() if isinstance(model, Path) else model
    except OSError as exc:
        raise PipelineError(f"cannot read {label}: {exc.strerror or exc}") from None
    try:
        session = ort.InferenceSession(source, options, providers=PROVIDERS)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise PipelineError(f"onnxruntime cannot load {label}: {exc}") from None
    check_interface(session, label, outputs)
    return session


def run_model(
    session: ort.InferenceSession, outputs: list[str], feeds: dict[str, np.ndarray], where: str
) -> list[np.ndarray]:
    """`session.run`, with a failure at run time (a graph that loads and has the contract's
    interface, but cannot compute it, e.g. a Reshape to a size the input has not) a
    PipelineError naming `where` instead of onnxruntime's own exception."""
    try:
        return session.run(outputs, feeds)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise PipelineError(f"onnxruntime failed running {where}: {exc}") from None


def check_interface(
    session: ort.InferenceSession, where: str, outputs: tuple[str, ...] = (PROBABILITIES,)
) -> None:
    """PipelineError unless the graph has the contract's input and the named outputs."""
    inputs = [i.name for i in session.get_inputs()]
    found = [o.name for o in session.get_outputs()]
    if inputs != [INPUT_NAME] or not set(outputs) <= set(found):
        raise PipelineError(
            f"{where} is not an mnist-pipeline model: inputs {inputs}, outputs {found} "
            f"(expected input {INPUT_NAME!r} and output {' and '.join(map(repr, outputs))})"
        )
    expected = {INPUT_NAME: (None, 1, IMAGE_SIZE, IMAGE_SIZE)} | {
        name: (None, NUM_CLASSES) for name in outputs
    }
    for arg in [*session.get_inputs(), *session.get_outputs()]:
        shape = expected.get(arg.name)
        if shape is not None and not _fits(arg, shape):
            want = ", ".join("N" if d is None else str(d) for d in shape)
            raise PipelineError(
                f"{where} is not an mnist-pipeline model: {arg.name!r} is {arg.type} "
                f"{list(arg.shape)} (expected tensor(float) [{want}])"
            )


def _fits(arg: ort.NodeArg, shape: tuple[int | None, ...]) -> bool:
    """Float32 of `shape`'s rank, with each size the graph names equal to `shape`'s, and the
    batch (None in `shape`) left open: a graph fixed to one batch size fails every other."""
    dims = arg.shape
    return (
        arg.type == "tensor(float)"
        and len(dims) == len(shape)
        and all(
            not isinstance(dim, int) if want is None else (not isinstance(dim, int) or dim == want)
            for dim, want in zip(dims, shape, strict=True)
        )
    )


def model_input(images: np.ndarray) -> np.ndarray:
    """uint8 [N, 28, 28] digits (IDX pixels, 0-255) -> the model's float32 [N, 1, 28, 28] input
    in [0, 1] (the graph normalises)."""
    return (images.astype(np.float32) / np.float32(255))[:, None, :, :]
