"""Per-epoch training checkpoints: what they hold, and writing and reading them safely.

A checkpoint holds the model, optimizer and scheduler states, the RNG states, the history so far
and an `identity` (the params, dataset, training code, precision and PyTorch release it was
made with). It is written atomically after every epoch; `load` returns it only when its
identity matches the current run, so a run resumes exactly where an identical run stopped and
never from another run's state.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock, Timeout

from mnist_pipeline.core.atomic import write_with
from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.core.progress import log
from mnist_pipeline.model.weights import load_failure, torch_save

FORMAT = 1


def rng_states(shuffle: torch.Generator, device: torch.device) -> dict[str, Any]:
    """The RNG states a resumed run needs: torch's global one, the shuffle generator, CUDA's."""
    states = {"torch": torch.get_rng_state(), "shuffle": shuffle.get_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def restore_rng_states(
    states: dict[str, Any], shuffle: torch.Generator, device: torch.device
) -> None:
    """Put back what `rng_states` saved."""
    torch.set_rng_state(states["torch"])
    shuffle.set_state(states["shuffle"])
    if device.type == "cuda":
        torch.cuda.set_rng_state(states["cuda"], device)


def save(path: Path, state: dict[str, Any]) -> None:
    """Atomically write `state` (with the format number) as the checkpoint at `path`."""
    write_with(path, lambda tmp: torch_save({"format": FORMAT, **state}, tmp))


def _changed(made: dict[str, Any], identity: dict[str, Any]) -> list[str]:
    """Which params (and whether the dataset) differ between two identities."""
    made_params, params = made.get("params", {}), identity["params"]
    changed = sorted(k for k in {**made_params, **params} if made_params.get(k) != params.get(k))
    if made.get("dataset_sha256") != identity["dataset_sha256"]:
        changed.append("dataset")
    if made.get("extra_sha256") != identity.get("extra_sha256"):
        changed.append("extra data")
    if made.get("code_sha256") != identity.get("code_sha256"):
        changed.append("training code")
    for name in ("precision", "torch"):
        if made.get(name) != identity.get(name):
            changed.append(f"{name} ({made.get(name)} -> {identity.get(name)})")
    return changed


def _ours(checkpoint: Any) -> bool:
    """Whether `checkpoint` has this format's shape: a mapping of the format number, whose
    identity (if any) is a mapping and its params a mapping by name."""
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        return False
    made = checkpoint.get("identity", {})
    params = made.get("params", {}) if isinstance(made, dict) else None
    return isinstance(params, dict) and all(isinstance(key, str) for key in params)


def load(path: Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint at `path` if it was made with the same identity; else None (logged)."""
    if not path.is_file():
        return None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        log(f"ignoring unreadable checkpoint {path} ({load_failure(exc)}); starting fresh")
        return None
    if not _ours(checkpoint):
        log(f"ignoring checkpoint {path} of an unknown format; starting fresh")
        return None
    made = checkpoint.get("identity", {})
    if checkpoint.get("identity") != identity:
        changed = ", ".join(_changed(made, identity))
        log(f"checkpoint {path} was made with different {changed}; starting fresh")
        return None
    return checkpoint


@contextmanager
def only_training(model_dir: Path) -> Iterator[None]:
    """Hold `model_dir`/.train.lock: one training at a time writes a models folder (its
    checkpoint, which another would resume or delete, and its outputs); a second is refused."""
    model_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(model_dir / ".train.lock", timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise PipelineError(
            f"another training is writing {model_dir} (it holds {lock.lock_file}): let it end, "
            "or train in another folder"
        ) from None
    try:
        yield
    finally:
        lock.release()
