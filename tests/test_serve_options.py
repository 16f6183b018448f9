"""`python -m flows.serve` (and `flows.retrain`, `flows.sweep`): bad options and an unreachable
server are one line and an exit code, never a traceback, and nothing is deployed or run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from flows.api_errors import api_errors
from mnist_pipeline.core.errors import PipelineError
from tests.conftest import REPO_ROOT
from tests.process_helpers import free_port


def serve(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return script("serve", *args, **env)


def script(name: str, *args: str, cwd: Path = REPO_ROOT, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", f"flows.{name}", *args],
        cwd=cwd,
        env={
            **os.environ,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PYTHONPATH": str(REPO_ROOT),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_a_bad_cron_is_a_usage_error() -> None:
    done = serve("--workdir", str(REPO_ROOT), "--cron", "61 * * * *")
    assert done.returncode == 2, done.stderr
    assert "--cron: minute field: '61' is not a number from 0 to 59" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_blank_pool_is_a_usage_error() -> None:
    """`--pool ''` made deployments on no pool (no worker would run them) and exited 0."""
    for pool in ("", " "):
        done = serve("--workdir", str(REPO_ROOT), "--pool", pool)
        assert done.returncode == 2, done.stderr
        assert "--pool: a blank name names no work pool" in done.stderr, done.stderr


def test_a_server_that_cannot_be_reached_is_named_in_one_line() -> None:
    api = f"http://127.0.0.1:{free_port()}/api"  # nothing listens there
    done = serve("--pool", "nowhere", PREFECT_API_URL=api, PREFECT_CLIENT_MAX_RETRIES="0")
    assert done.returncode == 1, done.stderr
    # the pool's type is read first (a pool not for processes is refused before deploying)
    assert done.stderr.startswith(f"error: cannot reach the Prefect API at {api} (PREFECT_API_URL)")
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_without_a_prefect_server_nothing_is_served() -> None:
    """Prefect would start a temporary server that goes with this process, taking the schedule
    and the triggers with it: refused in one line, nothing started."""
    done = serve("--workdir", str(REPO_ROOT), PREFECT_API_URL="")
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("error: no Prefect API configured (set PREFECT_API_URL")
    assert len(done.stderr.strip().splitlines()) == 1
    assert "Starting temporary server" not in done.stdout + done.stderr


def test_every_flow_script_names_an_api_it_cannot_reach_in_one_line(tiny_workdir: Path) -> None:
    """Serving the deployments, one retraining run and a sweep, each with the API down: one
    line naming it, exit status 1, and nothing run in the project."""
    api = f"http://127.0.0.1:{free_port()}/api"  # nothing listens there
    (tiny_workdir / "grid.yaml").write_text("- {train.learning_rate: 0.002}\n")
    before = sorted(tiny_workdir.rglob("*"))
    env = {"PREFECT_API_URL": api, "PREFECT_CLIENT_MAX_RETRIES": "0"}
    for name, args in (
        ("serve", ("--workdir", str(tiny_workdir))),
        ("retrain", ()),
        ("sweep", ("grid.yaml",)),
    ):
        done = script(name, *args, cwd=tiny_workdir, **env)
        assert done.returncode == 1, (name, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in done.stderr, (name, done.stderr)
        assert lines[0].startswith(f"error: cannot reach the Prefect API at {api} "), lines
    assert sorted(tiny_workdir.rglob("*")) == before


def test_only_the_apis_own_http_errors_are_told_as_unreachable() -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    api = "http://127.0.0.1:4200/api"
    with temporary_settings(updates={PREFECT_API_URL: api}):
        told_apart(api)


def told_apart(api: str) -> None:
    refused = httpx.ConnectError("refused", request=httpx.Request("GET", f"{api}/health"))
    told = f"^cannot reach the Prefect API at {api} .*: refused"
    with pytest.raises(PipelineError, match=told), api_errors():
        raise refused
    webhook = httpx.ConnectError("down", request=httpx.Request("POST", "http://hooks.test/x"))
    with pytest.raises(httpx.ConnectError), api_errors():
        raise webhook  # a notification's server, not the API: as it was
    with pytest.raises(RuntimeError, match="^something else$"), api_errors():
        raise RuntimeError("something else")
    answer = httpx.Response(422, request=httpx.Request("POST", f"{api}/deployments/"))
    rejected = httpx.HTTPStatusError("Unprocessable", request=answer.request, response=answer)
    answered = f"^the Prefect API at {api} .* answered 422: Unpro"
    with pytest.raises(PipelineError, match=answered), api_errors():
        raise rejected


def test_credentials_in_the_api_url_are_not_told() -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    api = "http://bob:s3cret@127.0.0.1:4200/api"
    refused = httpx.ConnectError("refused", request=httpx.Request("GET", f"{api}/health"))
    settings = temporary_settings(updates={PREFECT_API_URL: api})
    with settings, pytest.raises(PipelineError) as told, api_errors():
        raise refused
    assert "s3cret" not in str(told.value) and "http://127.0.0.1:4200/api" in str(told.value)
