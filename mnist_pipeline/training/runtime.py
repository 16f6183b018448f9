"""The process-wide torch state a training run sets, and gives back to its caller when it ends.

A Prefect worker runs many flows in one process: a run pins what shapes its weights (threads,
deterministic algorithms, IEEE float32 arithmetic, oneDNN on, float32 as the default dtype, the
random generators it seeds) and restores the caller's settings afterwards, also after an error.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from mnist_pipeline.core.errors import ParamsError
from mnist_pipeline.core.params import TrainParams


def resolve_device(requested: str) -> torch.device:
    """`cpu`, or `cuda` when this machine has it (a clear error otherwise)."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise ParamsError(
            "train.device is 'cuda' but no CUDA device is available here "
            "(torch.cuda.is_available() is False); set train.device: cpu"
        )
    return torch.device(requested)


def seed(value: int, device: torch.device) -> None:
    """Seed weight initialisation (the CPU generator) and, on a GPU, its dropout: the run's
    own GPU only (`torch.manual_seed` would reseed every GPU of the process)."""
    torch.default_generator.manual_seed(value)
    if device.type == "cuda":
        torch.cuda.manual_seed(value)


def _own_gpus(device: torch.device) -> list[int]:
    """The GPU whose generator `seed` sets: the one to hand back unchanged."""
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


# Every float32 setting as (backend, op), parents first: what the `fp32_precision` attributes of
# torch.backends read and write. Called directly: in torch 2.14 the setter of
# torch.backends.mkldnn.fp32_precision writes the generic setting, not oneDNN's.
_SETTINGS = (
    ("generic", "all"),
    ("mkldnn", "all"),
    ("mkldnn", "matmul"),
    ("mkldnn", "conv"),
    ("mkldnn", "rnn"),
    ("cuda", "all"),
    ("cuda", "matmul"),
    ("cuda", "conv"),
    ("cuda", "rnn"),
)


@contextmanager
def _ieee_float32() -> Iterator[None]:
    """Float32 as float32: no TF32 in cuDNN or cuBLAS, no bf16 in oneDNN (what
    `torch.set_float32_matmul_precision("medium")` selects on CPUs with bf16), and cuDNN's
    algorithm chosen by rule, not by timing. These are not in the run's fingerprint.

    Each setting reads afterwards what it read before, and one the caller never set follows
    its parent again; only cuDNN's convolutions and RNNs, TF32 by default, keep TF32 as their
    own setting (PyTorch has no way back to that default)."""
    read, write = torch._C._get_fp32_precision_getter, torch._C._set_fp32_precision_setter
    saved = [(setting, read(*setting)) for setting in _SETTINGS]
    benchmark = torch.backends.cudnn.benchmark
    for setting, _ in saved:
        write(*setting, "ieee")
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = benchmark
        for setting, value in saved:
            write(*setting, "none")  # inherit again, where that reads as it did
            if read(*setting) != value:
                write(*setting, value)


@contextmanager
def torch_settings(params: TrainParams, device: torch.device | None = None) -> Iterator[None]:
    """Threads, deterministic algorithms, IEEE float32, oneDNN, the default dtype and the random
    generators for a run on `device` (cpu when None); the caller's settings come back."""
    device = device or torch.device("cpu")
    threads, dtype = torch.get_num_threads(), torch.get_default_dtype()
    onednn = torch.backends.mkldnn.enabled
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.set_num_threads(params.num_threads)
    torch.use_deterministic_algorithms(True)
    # Deterministic mode would also fill every new tensor with NaN before an op overwrites it
    # (~10% of a training step here, profiled); no op used here reads memory it did not write.
    torch.utils.deterministic.fill_uninitialized_memory = False
    torch.set_default_dtype(torch.float32)  # float64 elsewhere: other weights, or a crash
    torch.backends.mkldnn.enabled = True  # off elsewhere: other arithmetic, other weights
    try:
        with _ieee_float32(), torch.random.fork_rng(devices=_own_gpus(device)):
            yield
    finally:
        torch.backends.mkldnn.enabled = onednn
        torch.set_default_dtype(dtype)
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.utils.deterministic.fill_uninitialized_memory = fill
