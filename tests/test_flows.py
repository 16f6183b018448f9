"""The retraining flow on tiny synthetic data, against Prefect's test harness."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from prefect.settings import PREFECT_API_URL
from prefect.testing.utilities import prefect_test_harness

from flows.artifacts import MISTAKES_KEY, PER_CLASS_KEY, REPORT_KEY
from flows.retrain import flow_overrides, retrain
from mnist_pipeline.errors import GateError
from mnist_pipeline.registry import Registry
from tests.synthetic import write_mirror

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def prefect_server() -> Iterator[None]:
    with prefect_test_harness(server_startup_timeout=120):
        yield


def make_workdir(tmp_path: Path, mirror: str, sha: dict[str, str], **sections: dict) -> Path:
    """A project folder with a params.yaml for a fast run on the tiny dataset."""
    params = {
        "data": {"mirrors": [mirror], "sha256": sha, "timeout_s": 5.0},
        "train": {"epochs": 1, "batch_size": 32, "val_size": 32, "num_threads": 1},
        "evaluate": {"min_accuracy": 0.0, "batch_size": 64},
    }
    for section, values in sections.items():
        params.setdefault(section, {}).update(values)
    workdir = tmp_path / "project"
    workdir.mkdir()
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    return workdir


@pytest.fixture
def tiny_workdir(tmp_path: Path, tiny_mirror: tuple[Path, dict[str, str]]) -> Path:
    mirror, sha = tiny_mirror
    return make_workdir(tmp_path, str(mirror), sha)


def registry_versions(workdir: Path) -> list[int]:
    root = workdir / "registry"
    return [card["version"] for card in Registry(root, "mnist-cnn").versions()]


def latest_artifact(key: str) -> dict | None:
    """Newest artifact with `key`, through the REST API (prefect 3.8.8's client read_artifacts
    sends null filters, which this server version rejects with HTTP 422)."""
    body = {"artifacts": {"key": {"any_": [key]}}, "sort": "UPDATED_DESC", "limit": 1, "offset": 0}
    response = httpx.post(f"{PREFECT_API_URL.value()}/artifacts/filter", json=body, timeout=30)
    response.raise_for_status()
    found = response.json()
    return found[0] if found else None


def test_flow_overrides_only_carry_given_values() -> None:
    assert flow_overrides(None, None, None, None) == {}
    assert flow_overrides(2, 0.01, 0.5, "/a,/b") == {
        "train.epochs": 2,
        "train.learning_rate": 0.01,
        "evaluate.min_accuracy": 0.5,
        "data.mirrors": ["/a", "/b"],
    }


def task_runs(flow_run_id: str) -> dict[str, dict]:
    """The flow run's task runs by name, through the REST API (see latest_artifact)."""
    body = {"flow_runs": {"id": {"any_": [flow_run_id]}}, "limit": 50, "offset": 0}
    response = httpx.post(f"{PREFECT_API_URL.value()}/task_runs/filter", json=body, timeout=30)
    response.raise_for_status()
    return {run["name"]: run for run in response.json()}


def test_success_registers_a_version_and_publishes_artifacts(tiny_workdir: Path) -> None:
    state = retrain(workdir=str(tiny_workdir), epochs=1, return_state=True)
    result = state.result()
    assert result["version"] == 1 and result["alias"] == "production"
    assert registry_versions(tiny_workdir) == [1]
    card = Registry(tiny_workdir / "registry", "mnist-cnn").card("1")
    assert card["params"]["train"]["epochs"] == 1  # effective params are recorded
    report = latest_artifact(REPORT_KEY)
    assert report is not None and "v1" in report["data"] and "production" in report["data"]
    table = latest_artifact(PER_CLASS_KEY)
    assert table is not None and "precision" in str(table["data"])
    mistakes = latest_artifact(MISTAKES_KEY)
    assert mistakes is not None and "data:image/png;base64," in mistakes["data"]
    order = ["fetch", "train", "evaluate", "export", "parity", "register"]
    assert list(result["seconds"]["tasks"]) == order
    # Each task waits for the one before, so Prefect's graph draws the chain.
    runs = task_runs(str(state.state_details.flow_run_id))
    assert sorted(runs) == sorted(order)
    for before, after in zip(order, order[1:], strict=False):
        waits = runs[after]["task_inputs"].get("wait_for", [])
        assert [w["id"] for w in waits] == [runs[before]["id"]], after
    assert "wait_for" not in runs["fetch"]["task_inputs"]


def test_gate_failure_fails_the_run_and_registers_nothing(tiny_workdir: Path) -> None:
    state = retrain(workdir=str(tiny_workdir), min_accuracy=1.0, return_state=True)
    assert state.is_failed()
    assert "below" in state.message and "1.0" in state.message
    assert registry_versions(tiny_workdir) == []
    assert not (tiny_workdir / "models" / "model.onnx").exists()


# ---- the rest through .fn(): the flow's body, without a flow run (Prefect's testing guide)


def test_parity_failure_raises_and_registers_nothing(tmp_path: Path, tiny_mirror) -> None:
    mirror, sha = tiny_mirror
    workdir = make_workdir(tmp_path, str(mirror), sha, parity={"atol": 1e-15})
    with pytest.raises(GateError, match="ONNX parity failed"):
        retrain.fn(workdir=str(workdir))
    assert registry_versions(workdir) == []
    assert (workdir / "reports" / "parity.json").is_file()


@pytest.fixture
def flaky_http_mirror(tmp_path: Path, tiny_files) -> Iterator[tuple[str, dict[str, str], list]]:
    """An HTTP mirror on 127.0.0.1 whose first request fails with 503."""
    root = tmp_path / "www"
    sha = write_mirror(root, tiny_files)
    requests: list[int] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            requests.append(1)
            if len(requests) == 1:
                self.send_error(503, "warming up")
                return
            super().do_GET()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", sha, requests
    finally:
        server.shutdown()
        server.server_close()


def test_fetch_is_retried_after_a_failing_mirror(tmp_path: Path, flaky_http_mirror) -> None:
    url, sha, requests = flaky_http_mirror
    workdir = make_workdir(tmp_path, url, sha)
    result = retrain.fn(workdir=str(workdir))
    assert result["version"] == 1
    # 1 failed request, then the 4 files on the retry
    assert len(requests) == 5


def test_unchanged_dataset_is_not_fetched_again(tmp_path: Path, flaky_http_mirror) -> None:
    url, sha, requests = flaky_http_mirror
    workdir = make_workdir(tmp_path, url, sha)
    retrain.fn(workdir=str(workdir))
    before = len(requests)
    second = retrain.fn(workdir=str(workdir))
    assert len(requests) == before and second["version"] == 2
