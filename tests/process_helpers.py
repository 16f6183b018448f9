"""Starting and stopping the real servers and workers end-to-end tests use (127.0.0.1 only)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


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


def wait_for(
    check, timeout: float, what: str, proc: subprocess.Popen, log: Path, every: float = 1.0
):
    """Poll `check()` each `every` seconds until it is truthy (its value is returned) or time
    runs out; fail at once, with the log's tail, if `proc` exits."""
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
        time.sleep(every)
    pytest.fail(f"timed out waiting for {what}:\n{log.read_text()[-3000:]}")


@contextmanager
def prefect_server(folder: Path, **extra_env: str) -> Iterator[dict[str, str]]:
    """`prefect server start` on a free 127.0.0.1 port, PREFECT_HOME under `folder`, stopped after.

    Yields the environment its clients and workers use (MNIST_MIRROR removed: tests and
    benchmarks pick their mirrors themselves); the server's log is `folder`/server.log.
    """
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k != "MNIST_MIRROR"},
        "PREFECT_HOME": str(folder / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        **extra_env,
    }
    log = folder / "server.log"
    prefect = str(Path(sys.executable).parent / "prefect")
    args = [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    proc = start(args, env, log, folder)
    try:
        health = f"http://127.0.0.1:{port}/api/health"
        up = lambda: urllib.request.urlopen(health, timeout=2).status == 200  # noqa: E731
        wait_for(up, 180, "prefect server", proc, log)
        yield env
    finally:
        drain_prefect_senders()
        stop(proc)


def drain_prefect_senders(timeout_s: float = 30) -> None:
    """Send what this process queued for a Prefect API (events, log lines) while the server is
    still up: a sender left holding items for a stopped server makes the next test harness's
    drain (which has no timeout) wait forever."""
    if "prefect" not in sys.modules:
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for sender in (EventsWorker, APILogWorker):
        sender.drain_all(timeout=timeout_s, at_exit=False)


@contextmanager
def mnist_server(
    root: Path,
    log: Path,
    workers: int = 1,
    registry: str | None = None,
    started: list[subprocess.Popen] | None = None,
    **serve: object,
) -> Iterator[str]:
    """`python -m mnist_pipeline serve` for the project `root` on a free port (the alias checked
    every 0.2 s, plus `serve` params; the registry at `registry`, default root/registry); yields
    its base URL once /readyz says ready (its process appended to `started`, if given)."""
    import httpx
    import yaml

    from tests.conftest import REPO_ROOT

    params: dict[str, object] = {"serve": {"reload_interval_s": 0.2, **serve}}
    if registry is not None:
        params["registry"] = {"root": registry}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    port = free_port()
    args = [sys.executable, "-m", "mnist_pipeline", "--root", str(root), "serve"]
    args += ["--port", str(port), "--workers", str(workers)]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = start(args, env, log, REPO_ROOT)
    if started is not None:
        started.append(proc)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: httpx.get(f"{url}/readyz").status_code == 200, 60, "serve", proc, log)
        yield url
    finally:
        stop(proc)


@contextmanager
def git_daemon(served: Path, log: Path) -> Iterator[str]:
    """`git daemon` serving the repositories in `served` on 127.0.0.1; yields its base URL."""
    port = free_port()
    args = ["git", "daemon", "--reuseaddr", "--export-all", "--informative-errors"]
    args += ["--listen=127.0.0.1", f"--port={port}", f"--base-path={served}", str(served)]
    proc = start(args, dict(os.environ), log, served)
    url = f"git://127.0.0.1:{port}"
    try:
        probe = ["git", "ls-remote", f"{url}/mnist-pipeline.git"]
        up = lambda: subprocess.run(probe, capture_output=True, timeout=10).returncode == 0  # noqa: E731
        wait_for(up, 30, "git daemon", proc, log)
        yield url
    finally:
        stop(proc)
