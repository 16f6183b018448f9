"""Scheduled retraining for real: a `prefect server start` on 127.0.0.1, flows.serve, a run."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings

from mnist_pipeline.params import MIRROR_ENV
from mnist_pipeline.registry import Registry
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
DEPLOYMENT = "mnist-retrain/test-weekly"
CRON = "0 4 * * 1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(args: list[str], env: dict[str, str], log: Path, cwd: Path) -> subprocess.Popen:
    """Start a process in its own session so the whole group can be stopped."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            args, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process group, then SIGKILL what is left; wait so nothing lingers."""
    for sig, grace in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def wait_for(check, timeout: float, what: str, proc: subprocess.Popen, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what}: process exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            result = check()
        except Exception:
            result = None
        if result:
            return result
        time.sleep(1)
    pytest.fail(f"timed out waiting for {what}:\n{log.read_text()[-3000:]}")


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
def prefect_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, dict[str, str]]]:
    """One real `prefect server start` on 127.0.0.1 for the module's tests, stopped after."""
    tmp_path = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k != MIRROR_ENV},  # tests pick their mirrors
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
    }
    log = tmp_path / "server.log"
    args = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    proc = start(args, env, log, tmp_path)
    try:
        health = f"http://127.0.0.1:{port}/api/health"
        wait_for(
            lambda: urllib.request.urlopen(health, timeout=2).status == 200,
            180,
            "prefect server",
            proc,
            log,
        )
        yield env["PREFECT_API_URL"], env
    finally:
        stop(proc)
    assert proc.poll() is not None


def test_served_deployment_runs_on_a_real_server(
    tmp_path: Path, prefect_server, tiny_mirror
) -> None:
    api_url, env = prefect_server
    workdir = tiny_project(tmp_path, tiny_mirror, {"deployment_name": "test-weekly", "cron": CRON})
    log = tmp_path / "serve.log"
    serve = start(
        [sys.executable, "-m", "flows.serve", "--workdir", str(workdir)], env, log, REPO_ROOT
    )
    try:
        with temporary_settings(updates={PREFECT_API_URL: api_url}):

            def deployment():
                with get_client(sync_client=True) as client:
                    return client.read_deployment_by_name(DEPLOYMENT)

            found = wait_for(deployment, 120, "the served deployment", serve, log)
            assert [s.schedule.cron for s in found.schedules] == [CRON]
            flow_run = run_deployment(DEPLOYMENT, parameters={"epochs": 1}, timeout=300)
        assert flow_run.state is not None and flow_run.state.is_completed(), log.read_text()
        cards = Registry(workdir / "registry", "mnist-cnn").versions()
        assert [c["version"] for c in cards] == [1]
        assert cards[0]["params"]["train"]["epochs"] == 1
    finally:
        stop(serve)
    assert serve.poll() is not None


def test_work_pool_deployment_runs_on_a_process_worker(
    tmp_path: Path, prefect_server, tiny_mirror
) -> None:
    """Scaling out: the deployment on a process work pool, run by `prefect worker start`."""
    api_url, env = prefect_server
    schedule = {"deployment_name": "test-pool-weekly", "cron": CRON, "timezone": "UTC"}
    workdir = tiny_project(tmp_path, tiny_mirror, schedule)
    prefect = str(BIN / "prefect")
    for args in (
        [prefect, "work-pool", "create", "test-pool", "--type", "process"],
        [sys.executable, "-m", "flows.serve", "--workdir", str(workdir), "--pool", "test-pool"],
    ):
        done = subprocess.run(
            args, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stdout + done.stderr
    assert "prefect worker start --pool test-pool" in done.stdout
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
