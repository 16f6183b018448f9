"""Shared fixtures: a tiny synthetic dataset as a directory mirror, and params that trust it."""

from __future__ import annotations

from pathlib import Path

import pytest

from mnist_pipeline.params import Params, parse_params
from mnist_pipeline.registry import Candidate, Registry
from tests.registry_helpers import make_candidate
from tests.synthetic import make_dataset, write_data_dir, write_mirror

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_MNIST = REPO_ROOT.parent / "shared" / "mnist"

requires_real_mnist = pytest.mark.skipif(
    not (SHARED_MNIST / "train-images-idx3-ubyte.gz").exists(),
    reason=f"real MNIST not found in {SHARED_MNIST}",
)


@pytest.fixture(autouse=True)
def _no_mirror_override(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests choose their mirrors themselves: `make test` exports MNIST_MIRROR for real data."""
    monkeypatch.delenv("MNIST_MIRROR", raising=False)


@pytest.fixture
def tiny_files() -> dict[str, bytes]:
    """The four decompressed files of a tiny synthetic dataset (256 train, 128 test)."""
    return make_dataset()


@pytest.fixture
def tiny_mirror(tmp_path: Path, tiny_files: dict[str, bytes]) -> tuple[Path, dict[str, str]]:
    """A gzipped directory mirror of the tiny dataset and its decompressed SHA-256 table."""
    mirror = tmp_path / "mirror"
    return mirror, write_mirror(mirror, tiny_files)


@pytest.fixture
def tiny_params(tiny_mirror: tuple[Path, dict[str, str]]) -> Params:
    """Params whose data section points at the tiny mirror; small, fast training."""
    mirror, sha = tiny_mirror
    return parse_params(
        {
            "data": {"mirrors": [str(mirror)], "sha256": sha},
            "train": {"epochs": 2, "batch_size": 32, "val_size": 32, "num_threads": 1},
            "evaluate": {"min_accuracy": 0.5},
        }
    )


@pytest.fixture
def tiny_data_dir(tmp_path: Path, tiny_files: dict[str, bytes]) -> Path:
    """A data/mnist folder already holding the tiny dataset, as `fetch` leaves it."""
    folder = tmp_path / "data" / "mnist"
    write_data_dir(folder, tiny_files)
    return folder


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    """An empty registry (model mnist-cnn) in tmp_path."""
    return Registry(tmp_path / "registry", "mnist-cnn")


@pytest.fixture
def make(tmp_path: Path):
    """make(seed, **report_overrides) -> a fresh registry candidate with a distinct ONNX model."""

    def _make(seed: int, **reports) -> Candidate:
        return make_candidate(tmp_path / f"cand{seed}", seed, **reports)

    return _make
