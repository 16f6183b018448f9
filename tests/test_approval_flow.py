"""Approval against a real Prefect server: a flow run pauses for a version proposed for
production, `models approve|reject` answer it, and a run nobody answers ends with the version
staging; the retraining flow itself reaches the pause."""

from __future__ import annotations

import getpass
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from mnist_pipeline.pipeline.approval import waiting_tag
from mnist_pipeline.registry import Registry
from tests.approval_helpers import proposed_project
from tests.conftest import REPO_ROOT
from tests.process_helpers import prefect_server, start, stop, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A `prefect server start` for the module; the environment its clients use."""
    with prefect_server(tmp_path_factory.mktemp("prefect")) as env:
        yield {**env, "PYTHONPATH": str(REPO_ROOT)}


def flow_run(api: str, run_id: str) -> dict:
    response = httpx.get(f"{api}/flow_runs/{run_id}", timeout=30)
    response.raise_for_status()
    return response.json()


def paused_run(api: str, tag: str) -> dict | None:
    """The paused flow run tagged `tag` (None: none yet)."""
    body = {
        "flow_runs": {"tags": {"all_": [tag]}, "state": {"type": {"any_": ["PAUSED"]}}},
        "limit": 5,
        "offset": 0,
    }
    response = httpx.post(f"{api}/flow_runs/filter", json=body, timeout=30)
    response.raise_for_status()
    found = response.json()
    return found[0] if found else None


def models(project: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    cli = [sys.executable, "-m", "mnist_pipeline", "--root", str(project), "models", *args]
    return subprocess.run(cli, env=env, capture_output=True, text=True, timeout=180)


def waiting(project: Path, env: dict[str, str], timeout_s: int) -> subprocess.Popen:
    """A flow run (its own process) waiting for approval of v2, compared with v1."""
    args = [sys.executable, "-m", "tests.approval_helpers", str(project), "2", "1", str(timeout_s)]
    return start(args, env, project / "flow.log", REPO_ROOT)


def answered(
    project: Path, env: dict[str, str], model: str, *answer: str
) -> tuple[Registry, dict, subprocess.CompletedProcess]:
    """Start a run waiting for v2 of `model`, answer it with `models *answer` once paused;
    returns the registry, the finished run, and the CLI's result."""
    registry, _ = proposed_project(project, model)
    api, log = env["PREFECT_API_URL"], project / "flow.log"
    proc = waiting(project, env, 600)
    try:
        run = wait_for(lambda: paused_run(api, waiting_tag(model, 2)), 180, "pause", proc, log)
        assert registry.aliases() == {"production": 1, "staging": 2}  # nothing moved yet
        done = models(project, env, *answer)
        assert proc.wait(timeout=180) == 0, log.read_text()[-3000:]
    finally:
        stop(proc)
    return registry, flow_run(api, run["id"]), done


def test_approve_promotes_with_the_approver_and_comment(
    tmp_path: Path, server: dict[str, str]
) -> None:
    answer = ("approve", "2", "--comment", "looks right", "--actor", "user:eve")
    registry, run, done = answered(tmp_path / "p", server, "approve-me", *answer)
    assert done.returncode == 0 and "to approve v2" in done.stderr, done.stderr
    assert registry.aliases() == {"production": 2, "staging": 2}
    event = registry.alias_log()["events"][-1]
    assert (event["action"], event["version"], event["previous"]) == ("promote", 2, 1)
    assert (event["actor"], event["evidence"]) == ("user:eve", {"comment": "looks right"})
    assert run["state"]["type"] == "COMPLETED"
    assert run["state"]["message"] == "user:eve approved v2: production v1 -> v2 (looks right)"
    assert "approval:approved" in run["tags"]
    assert waiting_tag("approve-me", 2) not in run["tags"]
    assert registry.verify() == []


def test_reject_keeps_staging_and_a_second_answer_finds_no_run(
    tmp_path: Path, server: dict[str, str]
) -> None:
    project = tmp_path / "p"
    answer = ("reject", "2", "--comment", "worse on 7s")
    registry, run, done = answered(project, server, "reject-me", *answer)
    assert done.returncode == 0, done.stderr
    assert registry.aliases() == {"production": 1, "staging": 2}
    event = registry.alias_log()["events"][-1]
    assert (event["action"], event["version"], event["previous"]) == ("reject", 2, 1)
    assert event["actor"] == f"user:{getpass.getuser()}"
    assert event["evidence"] == {"comment": "worse on 7s"}
    assert run["state"]["type"] == "COMPLETED" and "approval:rejected" in run["tags"]
    before = registry.alias_log()
    again = models(project, server, "approve", "2")  # the run is no longer waiting
    assert again.returncode == 1
    assert again.stderr.count("\n") == 1, again.stderr
    assert "no paused flow run is waiting for approval of reject-me v2" in again.stderr
    assert registry.alias_log() == before


def test_no_answer_in_time_keeps_staging(tmp_path: Path, server: dict[str, str]) -> None:
    project = tmp_path / "p"
    registry, _ = proposed_project(project, "time-me")
    proc = waiting(project, server, 1)
    try:
        assert proc.wait(timeout=180) == 0, (project / "flow.log").read_text()[-3000:]
    finally:
        stop(proc)
    assert "outcome: expired" in (project / "flow.log").read_text()
    assert registry.aliases() == {"production": 1, "staging": 2}
    event = registry.alias_log()["events"][-1]
    assert (event["action"], event["version"], event["previous"]) == ("expire", 2, 1)


def test_the_retraining_flow_pauses_and_keeps_staging_without_an_answer(
    tmp_path: Path, tiny_mirror, server: dict[str, str]
) -> None:
    from flows.artifacts import REPORT_KEY
    from flows.retrain import retrain
    from tests.flow_helpers import latest_artifact, make_workdir

    mirror, sha = tiny_mirror
    required = {"approval": "required", "approval_timeout_s": 1}
    workdir = make_workdir(tmp_path, str(mirror), sha, registry=required)
    with temporary_settings(updates={PREFECT_API_URL: server["PREFECT_API_URL"]}):
        state = retrain(workdir=str(workdir), return_state=True)
        report = latest_artifact(REPORT_KEY)["data"]
    assert state.is_completed(), state.message
    assert (
        state.message
        == "no answer within 1 s to the proposal of v1 for production: v1 stays staging"
    )
    result = state.result()
    assert (result["version"], result["alias"], result["approval"]) == (1, "staging", "expired")
    assert report.startswith("# MNIST retraining: mnist-cnn v1")  # published before pausing
    registry = Registry(workdir / "registry", "mnist-cnn")
    assert registry.aliases() == {"staging": 1}
    register, expire = registry.alias_log()["events"]
    assert register["evidence"]["proposed"] == "production" and expire["action"] == "expire"
    tags = flow_run(server["PREFECT_API_URL"], str(state.state_details.flow_run_id))["tags"]
    assert "approval:expired" in tags and waiting_tag("mnist-cnn", 1) not in tags
