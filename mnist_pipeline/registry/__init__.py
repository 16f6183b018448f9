"""Versioned model registry: immutable, hash-verified versions with aliases (torch-free).

It knows nothing of the pipeline: a caller submits files, a description and an alias decision;
the registry decides the version number, stores the files content-addressed, and hands them
back as verified bytes or a verified local copy.

registry = Registry(Path("registry"), "mnist-cnn")
registration = registry.register(Submission(files, description, Decision("production", why)))
onnx = registry.read_file("production", "model.onnx")   # refuses a tampered or missing file
"""

from __future__ import annotations

from mnist_pipeline.registry.aliases import PRODUCTION, STAGING
from mnist_pipeline.registry.api import Registry
from mnist_pipeline.registry.audit import UntrustedAliases
from mnist_pipeline.registry.backends import local_folder, open_storage
from mnist_pipeline.registry.card import SEAL_KEY
from mnist_pipeline.registry.garbage import GRACE_S
from mnist_pipeline.registry.lost import LostAliases
from mnist_pipeline.registry.registration import Decision, Registration, Submission
from mnist_pipeline.registry.storage import Storage
from mnist_pipeline.registry.trail import RESTART, default_actor

__all__ = [
    "GRACE_S",
    "PRODUCTION",
    "RESTART",
    "SEAL_KEY",
    "STAGING",
    "Decision",
    "Registration",
    "Registry",
    "Storage",
    "Submission",
    "LostAliases",
    "UntrustedAliases",
    "default_actor",
    "local_folder",
    "open_storage",
]
