"""Versioned model registry: immutable, hash-verified versions with aliases (torch-free).

registry = Registry(Path("registry"), "mnist-cnn")
registration = registry.register(candidate_from_layout(Layout()), params, margin)
onnx_path = registry.resolve("production")   # refuses a tampered or missing file
"""

from __future__ import annotations

from mnist_pipeline.registry.aliases import PRODUCTION, STAGING
from mnist_pipeline.registry.api import Registration, Registry
from mnist_pipeline.registry.candidate import Candidate, candidate_from_layout

__all__ = [
    "PRODUCTION",
    "STAGING",
    "Candidate",
    "Registration",
    "Registry",
    "candidate_from_layout",
]
