"""Shared fixtures: tiny synthetic data, an untrained exported model, and one real-MNIST run.

Tests that need real MNIST use `real_run` (or `real_data_dir`) and must be marked `e2e`; e2e
tests are also `slow`, so `-m "not slow"` never trains on real data. Under CI=true a missing tool
or dataset that `.ci/run` provides fails the test instead of skipping it (`unavailable`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest
from filelock import FileLock

from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.params import Params, parse_params
from mnist_pipeline.pipeline.candidate import Candidate
from mnist_pipeline.registry import Registry
from tests.inbox_shared_helpers import location  # noqa: F401 - a fixture
from tests.notify_helpers import receiver  # noqa: F401 - a fixture for the flow tests
from tests.registry_helpers import make_candidate
from tests.s3_helpers import registry_root, s3_endpoint, s3_url  # noqa: F401 - fixtures
from tests.synthetic import make_dataset, write_data_dir, write_mirror

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_MNIST = REPO_ROOT.parent / "shared" / "mnist"
IN_CI = os.environ.get("CI") == "true"
# "gw0", "gw1", ... in the processes of `pytest -n N` (pytest-xdist; `make test` runs two).
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
# The shared real-data run: one short epoch (about 97% accurate), the real stages end to end.
# One thread beside another pytest process: two 2-thread trainings on 2 cores slow each other
# many times over (benchmarks/concurrent_training.py).
REAL_TRAIN = {
    "epochs": 1,
    "max_batches_per_epoch": 300,
    "val_size": 1000,
    "num_threads": 1 if XDIST_WORKER else 2,
}
# Caller metadata of the untrained model's ONNX (export's tests check it comes through).
UNTRAINED_META = {
    "test_accuracy": "0.9912",
    "training_data_sha256": "ab" * 32,
    "model_version": "7",
}


def pytest_configure(config: pytest.Config) -> None:
    """In each process of `pytest -n N`: Prefect state of its own (temporary servers share a
    SQLite file in PREFECT_HOME otherwise), and OpenMP threads that sleep rather than spin while
    they wait, so that trainings in the two processes, and in the subprocesses they start, share
    the cores instead of stalling each other (set before torch is imported; a user's value wins).
    """
    if XDIST_WORKER:
        home = Path(os.environ.get("PREFECT_HOME", Path.home() / ".prefect"))
        os.environ["PREFECT_HOME"] = str(home / f"pytest-{XDIST_WORKER}")
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Verified registry copies (Registry.fetch) go to a temporary cache, not ~/.cache; set
    in the environment so that subprocesses the tests start use it too."""
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if before is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = before


def unavailable(reason: str) -> NoReturn:
    """Skip a test whose tool or data is missing; fail it under CI=true (.ci/run provides all)."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true, where .ci/run must provide it)", pytrace=False)
    pytest.skip(reason)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """e2e implies slow; a test that reaches the real-data run without the e2e mark is an error.
    In `pytest -n N` the modules holding end-to-end tests run first, then those with slow ones."""
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        uses_real_data = {"_real_run", "_real_wide_run", "real_mirror"} & used
        if uses_real_data and item.get_closest_marker("e2e") is None:
            raise pytest.UsageError(f"{item.nodeid} uses real MNIST: mark it @pytest.mark.e2e")
        if item.get_closest_marker("e2e") is not None:
            item.add_marker(pytest.mark.slow)
    if XDIST_WORKER:
        # Modules with the longest tests first (each module's tests kept together, for its
        # module-scoped fixtures), so that no process starts a long test near the end while the
        # other has nothing left to run; the same order in every process, as pytest-xdist needs.
        weights: dict[str, int] = {}
        for item in items:
            weights[item.module.__name__] = min(weights.get(item.module.__name__, 2), _weight(item))
        items.sort(key=lambda item: weights[item.module.__name__])


def _weight(item: pytest.Item) -> int:
    """0 for end-to-end tests on real MNIST, 1 for other slow tests, 2 for the rest."""
    if item.get_closest_marker("e2e") is not None:
        return 0
    return 1 if item.get_closest_marker("slow") is not None else 2


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
    """A data/mnist folder under tmp_path already holding the tiny dataset, as `fetch` leaves it."""
    folder = Layout(tmp_path).data_dir
    write_data_dir(folder, tiny_files)
    return folder


@pytest.fixture(scope="session")
def untrained(tmp_path_factory: pytest.TempPathFactory) -> Layout:
    """A layout holding random weights (seed 0, ~10% accurate) and their ONNX export."""
    import torch

    from mnist_pipeline.core.params import ExportParams
    from mnist_pipeline.export.export import export_onnx
    from mnist_pipeline.model.network import build_model
    from mnist_pipeline.model.weights import save_state_dict

    layout = Layout(tmp_path_factory.mktemp("untrained"))
    torch.manual_seed(0)
    save_state_dict(build_model("classic"), layout.state_dict)
    export_onnx(ExportParams(), "classic", layout.state_dict, layout.onnx, UNTRAINED_META)
    return layout


def _real_pipeline(folder: Path, **sections: dict) -> Layout:
    """fetch → train → evaluate → export → parity on real MNIST in `folder`, with `sections`
    of params."""
    from mnist_pipeline.pipeline import stages

    if not (SHARED_MNIST / "train-images-idx3-ubyte.gz").is_file():
        unavailable(f"real MNIST not found in {SHARED_MNIST}")
    layout = Layout(folder)
    params = parse_params({"data": {"mirrors": [str(SHARED_MNIST)]}, **sections})
    for name in ("fetch", "train", "evaluate", "export", "parity"):
        stages.run(name, params, layout)
    return layout


def _once_per_run(tmp_path_factory: pytest.TempPathFactory, name: str, **sections: dict) -> Layout:
    """`_real_pipeline` in a folder every pytest process of this run shares: the first to get
    here builds it, the others wait and read it (pytest-xdist's way to share a session fixture).
    Its users only read it."""
    if XDIST_WORKER is None:
        return _real_pipeline(tmp_path_factory.mktemp(name), **sections)
    shared = tmp_path_factory.getbasetemp().parent  # the run's folder, above each process's
    folder, done = shared / name, shared / f"{name}.done"
    with FileLock(shared / f"{name}.lock"):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)  # a process that failed part-way
            folder.mkdir()
            _real_pipeline(folder, **sections)
            done.touch()
    return Layout(folder)


@pytest.fixture(scope="session")
def _real_run(tmp_path_factory: pytest.TempPathFactory) -> Layout:
    """fetch → train (REAL_TRAIN) → evaluate → export → parity on real MNIST, once per test
    run."""
    return _once_per_run(
        tmp_path_factory, "real-run", train=REAL_TRAIN, evaluate={"min_accuracy": 0.95}
    )


@pytest.fixture(scope="session")
def _real_wide_run(tmp_path_factory: pytest.TempPathFactory) -> Layout:
    """The same with `model.arch: wide`, trained briefly (the examples run it like the classic)."""
    return _once_per_run(
        tmp_path_factory,
        "real-wide-run",
        model={"arch": "wide"},
        train=REAL_TRAIN,
        evaluate={"min_accuracy": 0.95, "robustness_per_transform": 50},
    )


@pytest.fixture
def real_run(_real_run: Layout) -> Layout:
    """The session's real-data run (its layout: data, weights, reports, ONNX). Read-only."""
    return _real_run


@pytest.fixture
def real_mirror() -> Path:
    """The real MNIST mirror folder (../shared/mnist)."""
    if not (SHARED_MNIST / "train-images-idx3-ubyte.gz").is_file():
        unavailable(f"real MNIST not found in {SHARED_MNIST}")
    return SHARED_MNIST


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


@pytest.fixture(scope="module")
def prefect_harness() -> Iterator[None]:
    """Prefect's test harness (a temporary server) for a module's flow tests."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def tiny_workdir(tmp_path: Path, tiny_mirror: tuple[Path, dict[str, str]]) -> Path:
    """A project folder whose params.yaml fetches the tiny dataset from its mirror."""
    from tests.flow_helpers import make_workdir

    mirror, sha = tiny_mirror
    return make_workdir(tmp_path, str(mirror), sha)
