"""How the pipeline keeps its models in the registry: which registry params.yaml configures,
and the names of the files a version holds (torch-free)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from mnist_pipeline.core.errors import RegistryError
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.reports import ModelCard, parse_report
from mnist_pipeline.core.service_params import RegistryParams
from mnist_pipeline.registry import Registry
from mnist_pipeline.registry.signing import Signing

ONNX_FILE = "model.onnx"
STATE_DICT_FILE = "model.pt"
TRAIN_RECORD_FILE = "model.json"
METRICS_FILE = "metrics.json"
PARITY_FILE = "parity.json"
HISTORY_FILE = "train_history.csv"
PLOTS_DIR = "plots"
IDENTITY = (STATE_DICT_FILE, ONNX_FILE)  # the same weights and graph: the same model


def open_registry(params: RegistryParams, layout: Layout) -> Registry:
    """The registry params.yaml configures (a relative `root` is under the project folder,
    layout.project, so every run folder shares one registry), with its signing keys
    (RegistryError: a local `root` that is a file)."""
    signing = Signing.load(
        layout.in_project(params.signing_key) if params.signing_key else None,
        [layout.in_project(path) for path in params.trusted_keys],
        params.require_signature,
    )
    root = layout.registry_root(params.root)
    if isinstance(root, Path):
        check_not_a_file(root, params.root)
    return Registry(root, params.model_name, signing)


def check_not_a_file(root: Path, setting: str) -> None:
    """RegistryError when the registry folder `root` (params `setting`, as written) is a file,
    which can never hold versions: read as a folder it would look empty."""
    if root.exists() and not root.is_dir():
        raise RegistryError(f"{root} (registry.root {setting!r}) is a file, not a registry folder")


def models_in(root: Path) -> set[str]:
    """The models a registry folder holds (its folders; none where `root` is no folder)."""
    if not root.is_dir():
        return set()
    return {p.name for p in root.iterdir() if p.is_dir() and p.name[0] != "."}


def read_card(registry: Registry, ref: str | int) -> ModelCard:
    """A version's card (sealed, signed when keys are trusted), typed."""
    return typed_card(registry, registry.card(ref))


def typed_card(registry: Registry, card: dict[str, Any]) -> ModelCard:
    """A card `registry` returned, as a ModelCard (an error naming the version if malformed)."""
    return parse_report(ModelCard, card, f"{registry.name} v{card.get('version')}'s card")


def load_state_dict(registry: Registry, ref: str | int) -> dict[str, Any]:
    """A version's verified PyTorch state_dict (imports torch; weights_only loading)."""
    import torch

    return torch.load(io.BytesIO(registry.read_file(ref, STATE_DICT_FILE)), weights_only=True)
