"""Scheduled retraining for real: a `prefect server start` on 127.0.0.1, flows.serve, a run."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.serve import trials_at_once
from mnist_pipeline.registry import Registry
from tests.conftest import REPO_ROOT
from tests.notify_helpers import webhook_block
from tests.process_helpers import prefect_server, start, stop, wait_for

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
DEPLOYMENT = "mnist-retrain/test-weekly"
CRON = "0 4 * * 1"


def tiny_project(tmp_path: Path, tiny_mirror, schedule: dict[str, str]) -> Path:
    """A working directory whose params.yaml trains briefly on the tiny mirror."""
    mirror, sha = tiny_mirror
    workdir = tmp_path / "project"
    workdir.mkdir()
    params = {
        "data": {"mirrors": [str(mirror)], "sha256": sha},
        "train": {"epochs": 3, "batch_size": 32, "val_size": 32, "num_threads": 1},
        "evaluate": {"min_accuracy": 0.0},
        "schedule": schedule,
    }
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    return workdir


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """One real `prefect server start` on 127.0.0.1 (SQLite) for the module's tests."""
    with prefect_server(tmp_path_factory.mktemp("prefect-server")) as env:
        yield env["PREFECT_API_URL"], env


def scheduled_runs(deployment_id) -> int:
    """How many Scheduled flow runs the server has created for the deployment (over REST: the
    3.8.8 client sends null offset/limit in this filter, which the server rejects)."""
    body = {
        "deployments": {"id": {"any_": [str(deployment_id)]}},
        "flow_runs": {"state": {"name": {"any_": ["Scheduled"]}}},
        "limit": 10,
        "offset": 0,
    }
    response = httpx.post(f"{PREFECT_API_URL.value()}/flow_runs/filter", json=body, timeout=30)
    response.raise_for_status()
    return len(response.json())


def hook_done(log: Path, flow_run_name: str) -> bool:
    """Whether the serving process says the run's failure hook has finished (the runner runs
    it once it has reported the run's process crashed)."""
    return f"Flow run '{flow_run_name}' - Hook 'notify_failure' finished" in log.read_text()


def test_served_deployment_runs_on_a_real_server(
    tmp_path: Path, server, tiny_mirror, receiver
) -> None:
    api_url, env = server
    url, received = receiver
    schedule = {"deployment_name": "test-weekly", "cron": CRON}
    schedule["notify_block"] = "custom-webhook/ops"
    workdir = tiny_project(tmp_path, tiny_mirror, schedule)
    log = tmp_path / "serve.log"
    polling = {**env, "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    serve = start(
        [sys.executable, "-m", "flows.serve", "--workdir", str(workdir)], polling, log, REPO_ROOT
    )
    try:
        with temporary_settings(updates={PREFECT_API_URL: api_url}):

            def deployment(name: str = DEPLOYMENT):
                with get_client(sync_client=True) as client:
                    return client.read_deployment_by_name(name)

            found = wait_for(deployment, 120, "the served deployment", serve, log)
            assert [s.schedule.cron for s in found.schedules] == [CRON]
            # params.yaml's schedule.concurrency_limit (1) and collision strategy (ENQUEUE).
            assert found.global_concurrency_limit.limit == 1
            assert found.concurrency_options.collision_strategy == "ENQUEUE"
            # A sweep's trials run in this process too: as many at once as the cores hold (its
            # deployment is created after the weekly one)
            trial = wait_for(
                lambda: deployment("mnist-retrain/trial"), 60, "the trial deployment", serve, log
            )
            assert trial.global_concurrency_limit.limit == trials_at_once(1)  # train.num_threads
            assert trial.concurrency_options.collision_strategy == "ENQUEUE"
            # The server's scheduler creates the cron's upcoming runs (it cannot with
            # SQLAlchemy 2.1: pinned in pyproject.toml).
            wait_for(lambda: scheduled_runs(found.id), 90, "scheduled runs", serve, log)
            webhook_block(url, "ops")
            flow_run = run_deployment(DEPLOYMENT, parameters={"epochs": 1}, timeout=300)
            # `prefect deployment run` refuses a parameter the flow does not have, naming it.
            cli = [str(BIN / "prefect"), "deployment", "run", DEPLOYMENT, "--param", "epoch=1"]
            refused = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=120)
            # Through the API such a run is created, and Prefect 3.8.8 crashes it before the
            # flow starts (a signature mismatch): nothing is done, and the crash is notified.
            unknown = run_deployment(DEPLOYMENT, parameters={"epoch": 1}, timeout=120)
            wait_for(lambda: received, 60, "the crash notification", serve, log)
            # The hook has finished; a second crash is notified after it, so a duplicate of the
            # first notification (from either process) would arrive before that one.
            wait_for(lambda: hook_done(log, unknown.name), 60, "the hook", serve, log)
            again = run_deployment(DEPLOYMENT, parameters={"epoch": 2}, timeout=120)
            wait_for(lambda: len(received) > 1, 60, "the second notification", serve, log)
        assert flow_run.state is not None and flow_run.state.is_completed(), log.read_text()
        assert refused.returncode != 0
        assert "specified but not found on the deployment: 'epoch'" in refused.stdout
        assert "'epochs'" in refused.stdout
        assert unknown.state is not None and unknown.state.is_crashed()
        assert again.state is not None and again.state.is_crashed()
        assert [m["subject"] for m in received] == [
            f"mnist-retrain run {unknown.name} crashed",
            f"mnist-retrain run {again.name} crashed",
        ]  # one notification per crashed run
        assert len(list((workdir / "runs").iterdir())) == 1  # only the good run's folder
        cards = Registry(workdir / "registry", "mnist-cnn").versions()
        assert [c["version"] for c in cards] == [1]
        assert cards[0]["params"]["train"]["epochs"] == 1
        assert cards[0]["origin"]["deployment"] == "test-weekly"
    finally:
        stop(serve)
    assert serve.poll() is not None
    # Stopping the serving process (a host restart) leaves the schedule running.
    with (
        temporary_settings(updates={PREFECT_API_URL: api_url}),
        get_client(sync_client=True) as client,
    ):
        after = client.read_deployment_by_name(DEPLOYMENT)
    assert not after.paused and [s.schedule.cron for s in after.schedules] == [CRON]
    assert all(s.active for s in after.schedules)


def test_work_pool_deployment_runs_on_a_process_worker(tmp_path: Path, server, tiny_mirror) -> None:
    """Scaling out: the deployment on a process work pool, run by `prefect worker start`."""
    api_url, env = server
    schedule = {"deployment_name": "test-pool-weekly", "cron": CRON, "timezone": "UTC"}
    workdir = tiny_project(tmp_path, tiny_mirror, schedule)
    prefect = str(BIN / "prefect")
    create = [prefect, "work-pool", "create", "test-docker", "--type", "docker"]
    subprocess.run(create, env=env, cwd=REPO_ROOT, check=True, capture_output=True, timeout=120)
    serve = [sys.executable, "-m", "flows.serve", "--workdir", str(workdir), "--pool"]
    refused = subprocess.run(
        [*serve, "test-docker"], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )  # its containers would not have this checkout's folder: nothing deployed
    assert refused.returncode == 1 and refused.stdout == "", refused.stdout + refused.stderr
    assert refused.stderr == (
        "error: work pool 'test-docker' is of type 'docker': `--pool` deploys this checkout's "
        "folder for a process pool's workers on this host; deploy to other workers with "
        "`prefect deploy` (prefect.yaml clones the repository)\n"
    )
    for args in (
        [prefect, "work-pool", "create", "test-pool", "--type", "process"],
        [sys.executable, "-m", "flows.serve", "--workdir", str(workdir), "--pool", "test-pool"],
    ):
        done = subprocess.run(
            args, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stdout + done.stderr
    assert "prefect worker start --pool test-pool" in done.stdout
    # `prefect deploy` onto the pool exits 0 too (with fastapi >= 0.151 it created the deployment
    # and then exited 1 on an HTTP 422: the pin in pyproject.toml).
    scratch = tmp_path / "deploy"
    scratch.mkdir()
    (scratch / "hello.py").write_text("from prefect import flow\n\n@flow\ndef hello():\n    pass\n")
    deploy = [prefect, "--no-prompt", "deploy", "hello.py:hello", "--name", "d1", "--pool"]
    done = subprocess.run(
        [*deploy, "test-pool"], env=env, cwd=scratch, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    log = tmp_path / "worker.log"
    worker = start([prefect, "worker", "start", "--pool", "test-pool"], env, log, tmp_path)
    try:
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            with get_client(sync_client=True) as client:
                found = client.read_deployment_by_name("mnist-retrain/test-pool-weekly")
            assert found.work_pool_name == "test-pool"
            assert [(s.schedule.cron, s.schedule.timezone) for s in found.schedules] == [
                (CRON, "UTC")
            ]
            flow_run = run_deployment(
                "mnist-retrain/test-pool-weekly", parameters={"epochs": 1}, timeout=300
            )
        assert flow_run.state is not None and flow_run.state.is_completed(), log.read_text()
        cards = Registry(workdir / "registry", "mnist-cnn").versions()
        assert [(c["version"], c["params"]["train"]["epochs"]) for c in cards] == [(1, 1)]
    finally:
        stop(worker)
    assert worker.poll() is not None
