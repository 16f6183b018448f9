"""Shared by the challenger tests (test_shadow.py, test_canary.py): two distinct registered
versions, PNG digits, and the app with a started challenger (and /feedback)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.service_params import ServeParams
from mnist_pipeline.registry import Registry
from mnist_pipeline.serving.challenger import Challenger
from mnist_pipeline.serving.http_api import create_app
from mnist_pipeline.serving.served_model import ServedModel, load_version
from mnist_pipeline.serving.server import feedback_of
from mnist_pipeline.serving.tokens import token_sha256
from tests.example_helpers import draw_digit
from tests.registry_helpers import exported_candidate, production_and_staging

TOKEN = "labeller-token-000001"


class Emitted(list):
    """The arguments of each emit_if_configured call the canary makes (in place of it), which
    it makes on a thread of its own: `reached(n)` waits until n have been recorded."""

    def __init__(self) -> None:
        super().__init__()
        self._added = threading.Condition()

    def __call__(self, *args: object) -> bool:
        with self._added:
            self.append(args)
            self._added.notify_all()
        return True

    def reached(self, count: int, timeout_s: float = 30) -> bool:
        with self._added:
            return self._added.wait_for(lambda: len(self) >= count, timeout_s)


@pytest.fixture(scope="module")
def _models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("challenged")
    return exported_candidate(root / "a", 1), exported_candidate(root / "b", 2)


@pytest.fixture
def registry(tmp_path: Path, _models: tuple[Path, Path]) -> Registry:
    """Two distinct registered versions: v1 production, v2 staging."""
    registry = production_and_staging(tmp_path / "registry", _models)
    assert registry.card("staging")["version"] == 2
    return registry


@pytest.fixture
def digits(tmp_path: Path) -> list[bytes]:
    """PNG digits, each drawn once (distinct bytes)."""
    return [draw_digit(tmp_path / f"digit{d}.png", d).read_bytes() for d in range(10)]


def uploads(digits: list[bytes], *which: int) -> list[tuple[str, tuple[str, bytes, str]]]:
    """The multipart `files` of a /predict request holding these of `digits` (named by index)."""
    return [("files", (f"{d}.png", digits[d], "image/png")) for d in which]


def served_api(registry: Registry, project: Path | None = None, **limits) -> tuple:
    """The app with a challenger (started; its alias checked hourly) and, with `project`,
    /feedback for TOKEN."""
    feedback = None
    if project is not None:
        project.mkdir(parents=True, exist_ok=True)
        (project / "tokens").write_text(f"labeller {token_sha256(TOKEN)}\n")
        limits |= {"feedback_tokens_file": "tokens", "feedback_rate_per_minute": 6000}
    serve = ServeParams(**limits)
    if project is not None:
        feedback = feedback_of(serve, Layout(project))
    served = ServedModel(registry, "production")
    served.refresh()
    challenger = Challenger(registry, serve, seed=7)
    challenger.start(3600, follow_events=False)
    return TestClient(create_app(served, serve, feedback, challenger)), challenger


def samples(api: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The scraped /metrics samples by (name, sorted labels)."""
    found = {}
    for family in text_string_to_metric_families(api.get("/metrics").text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def digits_of(registry: Registry, version: int, images: np.ndarray) -> np.ndarray:
    return load_version(registry, str(version)).probabilities(images).argmax(axis=1)
