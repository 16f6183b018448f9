"""`python -m flows.serve`: bad options and an unreachable server are one line and an exit code,
never a traceback, and nothing is deployed."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO_ROOT
from tests.process_helpers import free_port


def serve(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flows.serve", *args],
        cwd=REPO_ROOT,
        env={**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", **env},
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


def test_a_server_that_cannot_be_reached_is_named_in_one_line() -> None:
    api = f"http://127.0.0.1:{free_port()}/api"  # nothing listens there
    done = serve("--pool", "nowhere", PREFECT_API_URL=api, PREFECT_CLIENT_MAX_RETRIES="0")
    assert done.returncode == 1, done.stderr
    assert "error: cannot deploy to work pool 'nowhere': " in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_without_a_prefect_server_nothing_is_served() -> None:
    """Prefect would start a temporary server that goes with this process, taking the schedule
    and the triggers with it: refused in one line, nothing started."""
    done = serve("--workdir", str(REPO_ROOT), PREFECT_API_URL="")
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("error: no Prefect API configured (set PREFECT_API_URL")
    assert len(done.stderr.strip().splitlines()) == 1
    assert "Starting temporary server" not in done.stdout + done.stderr
