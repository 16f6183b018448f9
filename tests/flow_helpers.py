"""Helpers of the flow tests: a tiny project folder, and the Prefect API read over REST.

Prefect 3.8.8's client sends null offset/limit in some filters, which its server rejects (HTTP
422), so artifacts and task runs are read with plain POSTs to the filter endpoints.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pydantic
import pytest
import yaml
from prefect.settings import PREFECT_API_URL

from mnist_pipeline.registry import Registry


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


def registry_versions(workdir: Path) -> list[int]:
    root = workdir / "registry"
    return [card["version"] for card in Registry(root, "mnist-cnn").versions()]


def latest_artifact(key: str) -> dict | None:
    """The newest artifact with `key`."""
    body = {"artifacts": {"key": {"any_": [key]}}, "sort": "UPDATED_DESC", "limit": 1, "offset": 0}
    response = httpx.post(f"{PREFECT_API_URL.value()}/artifacts/filter", json=body, timeout=30)
    response.raise_for_status()
    found = response.json()
    return found[0] if found else None


def task_runs(flow_run_id: str) -> dict[str, dict]:
    """A flow run's task runs by name."""
    body = {"flow_runs": {"id": {"any_": [flow_run_id]}}, "limit": 50, "offset": 0}
    response = httpx.post(f"{PREFECT_API_URL.value()}/task_runs/filter", json=body, timeout=30)
    response.raise_for_status()
    return {run["name"]: run for run in response.json()}


def flow_run_tags(flow_run_id: str) -> list[str]:
    """A flow run's tags, as the runs list filters them."""
    response = httpx.get(f"{PREFECT_API_URL.value()}/flow_runs/{flow_run_id}", timeout=30)
    response.raise_for_status()
    return response.json()["tags"]


def refuse_prefect_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading the Prefect API URL fails as it does with a PREFECT_* value Prefect cannot parse
    (pydantic's ValidationError). Prefect reads its settings once per process, so a variable
    set in a test would not be read."""

    def refused() -> str:
        return str(pydantic.TypeAdapter(int).validate_python("abc"))

    monkeypatch.setattr(PREFECT_API_URL, "value", refused)
