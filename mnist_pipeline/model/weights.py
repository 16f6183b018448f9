"""Saving and loading model weights (state_dict files) safely and atomically."""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path

import torch
from torch import nn

from mnist_pipeline.core.atomic import write_with
from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.core.regular_file import read_regular
from mnist_pipeline.model.network import build_model


def save_state_dict(model: nn.Module, path: Path) -> None:
    """Atomically write the model's state_dict (contiguous CPU tensors) to `path`."""
    write_with(path, lambda tmp: write_state_dict(model, tmp))


def write_state_dict(model: nn.Module, path: Path) -> None:
    """Write the model's state_dict (contiguous CPU tensors) into `path` (a temp file of an
    atomic write: not atomic itself)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch_save(state, path)


def torch_save(obj: object, path: Path) -> None:
    """torch.save into `path` through a file object: given a path, torch.save names the zip's
    root folder after the (random) temp file name, so identical weights would give different
    bytes. A write that fails (a full disk) raises its OSError, not the RuntimeError (`unexpected
    pos`) that torch's zip writer raises over it while closing."""
    with open(path, "wb") as handle:
        try:
            torch.save(obj, handle)
        except RuntimeError as exc:
            if isinstance(exc.__context__, OSError):
                raise exc.__context__ from None
            raise


def load_model(arch: str, path: Path) -> nn.Module:
    """Build `arch` and load weights from `path` (weights_only=True); returned in eval mode."""
    return _load(arch, path, _read(path))


def load_model_and_hash(arch: str, path: Path) -> tuple[nn.Module, str]:
    """`load_model` and the SHA-256 of the very bytes it loaded: a file replaced in between
    (another training writing it) cannot make a report describe other weights than it scored."""
    data = _read(path)
    return _load(arch, path, data), hashlib.sha256(data).hexdigest()


def load_failure(exc: BaseException) -> str:
    """Why `torch.load(..., weights_only=True)` refused a file, in a few words: what it refused,
    never its advice to load with weights_only=False (which runs whatever the file holds)."""
    text = " ".join(str(exc).split())
    code = re.search(r"[Uu]nsupported (?:global: )?GLOBAL (\S+?)\.?(?: |$)", text)
    if code:  # a pickled function or class: what a full unpickler would import and run
        return f"not tensors the weights-only loader reads: it names {code.group(1)[:80]}"
    refused = re.search(r"WeightsUnpickler error: (.+?)(?: Check the documentation|$)", text)
    if refused:
        return f"not tensors the weights-only loader reads: {refused.group(1)[:120]}"
    if text.startswith("Weights only load failed"):
        return "not tensors the weights-only loader reads"
    return f"{type(exc).__name__}: {text.split('. ')[0][:160] or 'the data ends early'}"


def _read(path: Path) -> bytes:
    try:
        return read_regular(path)  # a pipe there: refused, not waited on
    except FileNotFoundError:
        raise PipelineError(f"no trained weights at {path}: run `mnist-pipeline train`") from None


def _load(arch: str, path: Path, data: bytes) -> nn.Module:
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise PipelineError(
            f"cannot load weights from {path} ({load_failure(exc)}): not a file "
            "`mnist-pipeline train` wrote; run it again"
        ) from None
    model = build_model(arch)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError):
        raise PipelineError(
            f"weights in {path} do not fit arch {arch!r} ({_misfit(model, state)}): set "
            "model.arch to the network they were trained as, or run `mnist-pipeline train`"
        ) from None
    return model.eval()


def _misfit(model: nn.Module, state: object) -> str:
    """How `state` differs from `model`'s state dict, in a few words."""
    if not isinstance(state, dict):
        return f"a {type(state).__name__}, not a state dict"
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    reshaped = [
        key
        for key, tensor in expected.items()
        if key in state and getattr(state[key], "shape", None) != tensor.shape
    ]
    parts = [
        f"{len(keys)} {what}, e.g. {keys[0]!r}"
        for what, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("of another shape", reshaped),
        )
        if keys
    ]
    return "; ".join(parts) or "not loadable"
