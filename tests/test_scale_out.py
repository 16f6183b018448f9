"""Scale-out for real: PostgreSQL, a Prefect server on it, a process work pool, two workers.

Everything runs on 127.0.0.1 in temp folders and is stopped after: Debian's PostgreSQL (installed
by .ci/run) on a free port, `prefect server start` using it, `flows.serve --pool` creating the
deployment (concurrency limit 3), and two `prefect worker start` processes. Three runs with
different params on tiny data must all complete, at least two of them at the same time on the two
workers (each worker takes a run, as the server's run logs say), and every registered version's
card must describe its own files.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import yaml
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings

from mnist_pipeline.core.layout import Layout
from mnist_pipeline.data.dataset import load_mnist, normalise
from mnist_pipeline.model.network import build_model, predict_logits
from mnist_pipeline.pipeline.versions import HISTORY_FILE, load_state_dict
from mnist_pipeline.registry import Registry
from tests.conftest import REPO_ROOT, unavailable
from tests.process_helpers import free_port, prefect_server, start, stop, wait_for
from tests.registry_helpers import registrations_held

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
POOL = "scale-out"
DEPLOYMENT = "mnist-retrain/scale-out"
EPOCHS = (1, 2, 3)
WORKERS = ("scale-out-1", "scale-out-2")


def postgres_bin() -> Path:
    """Debian's PostgreSQL binaries (the newest major version installed)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        unavailable("PostgreSQL is not installed: apt-get install -y postgresql")
    return found[-1].parent


def as_postgres(args: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run it as the postgres user when we are root."""
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on a free 127.0.0.1 port; yields its asyncpg URL.

    Its folder is a fresh one in the system temp dir: pytest's own (mode 0700, owned by root)
    is out of reach of the postgres user.
    """
    pg = postgres_bin()
    folder = Path(tempfile.mkdtemp(prefix="mnist-postgres-"))
    data, log = folder / "data", folder / "postgres.log"
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    initdb = [str(pg / "initdb"), "-D", str(data), "-U", "prefect", "--auth=trust"]
    done = subprocess.run(as_postgres(initdb), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    port = free_port()
    server = [
        str(pg / "postgres"), "-D", str(data), "-p", str(port), "-k", str(folder),
        "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200",
    ]  # fmt: skip
    proc = start(as_postgres(server), dict(os.environ), log, folder)
    try:
        ready = [str(pg / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)]
        wait_for(lambda: subprocess.run(ready).returncode == 0, 60, "postgres", proc, log)
        create = [
            str(pg / "createdb"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-U",
            "prefect",
            "prefect",
        ]
        assert subprocess.run(create, capture_output=True, timeout=60).returncode == 0
        yield f"postgresql+asyncpg://prefect@127.0.0.1:{port}/prefect"
    finally:
        stop(proc)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def server_env(postgres: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """`prefect server start` on PostgreSQL; yields the environment its clients use."""
    folder = tmp_path_factory.mktemp("prefect")
    with prefect_server(folder, PREFECT_API_DATABASE_CONNECTION_URL=postgres) as env:
        yield {**env, "_log": str(folder / "server.log")}


def project(tmp_path: Path, tiny_mirror) -> Path:
    mirror, sha = tiny_mirror
    workdir = tmp_path / "project"
    workdir.mkdir()
    params = {
        "data": {"mirrors": [str(mirror)], "sha256": sha},
        "train": {"batch_size": 32, "val_size": 32, "num_threads": 1},
        "evaluate": {"min_accuracy": 0.0},
        "schedule": {"deployment_name": "scale-out", "concurrency_limit": 3},
    }
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    return workdir


def worker_of(logs: list[Path], flow_run_id: str) -> str | None:
    """The worker that took a flow run, as the workers' own logs say: both may try to submit a
    run, and the server aborts every submission but one."""
    took = set()
    for log in logs:
        text = log.read_text()
        if f"Aborted submission of flow run '{flow_run_id}'" in text:
            continue
        took |= set(re.findall(rf"Worker '([^']+)' submitting flow run '{flow_run_id}'", text))
    return took.pop() if len(took) == 1 else None


def wait_for_two_running(
    client: SyncPrefectClient,
    runs: list[FlowRun],
    workers: list[subprocess.Popen],
    logs: list[Path],
) -> None:
    """Wait until two of `runs` are Running at the same moment (each worker takes one run at
    a time, and none can finish while registrations are held); fail if a worker exits."""
    deadline = time.monotonic() + 120
    while sum(client.read_flow_run(r.id).state.is_running() for r in runs) < 2:
        for worker, log in zip(workers, logs, strict=True):
            assert worker.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "never two runs at once"
        time.sleep(1)


def wait_for_final(client: SyncPrefectClient, runs: list[FlowRun]) -> list[FlowRun]:
    """`runs` as the server has them once every one is in a final state."""
    deadline = time.monotonic() + 480
    while True:
        runs = [client.read_flow_run(r.id) for r in runs]
        states = [r.state for r in runs]
        if all(s is not None and s.is_final() for s in states):
            return runs
        assert time.monotonic() < deadline, [s.name for s in states if s]
        time.sleep(2)


def overlapping(runs: list[FlowRun]) -> list[tuple[str, str]]:
    """Pairs of finished runs (by id) whose start..end intervals overlap."""
    return [
        (str(a.id), str(b.id))
        for a, b in itertools.combinations(runs, 2)
        if a.start_time < b.end_time and b.start_time < a.end_time
    ]


def test_two_workers_run_three_overlapping_runs(server_env: dict, tmp_path: Path, tiny_mirror):
    """Each worker takes one run at a time (--limit 1); the registry's lock is held until two
    runs are running at once, so both workers must have taken one."""
    env = {k: v for k, v in server_env.items() if not k.startswith("_")}
    workdir = project(tmp_path, tiny_mirror)
    prefect = str(BIN / "prefect")
    for args in (
        [prefect, "work-pool", "create", POOL, "--type", "process"],
        [sys.executable, "-m", "flows.serve", "--workdir", str(workdir), "--pool", POOL],
    ):
        done = subprocess.run(
            args, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stdout + done.stderr
    logs = [tmp_path / f"{name}.log" for name in WORKERS]
    polling = {**env, "PREFECT_WORKER_QUERY_SECONDS": "2"}
    command = [prefect, "worker", "start", "--pool", POOL, "--limit", "1", "--name"]
    workers = [
        start([*command, name], polling, log, tmp_path)
        for name, log in zip(WORKERS, logs, strict=True)
    ]
    registry = Registry(workdir / "registry", "mnist-cnn")
    try:
        with (
            temporary_settings(updates={PREFECT_API_URL: env["PREFECT_API_URL"]}),
            get_client(sync_client=True) as client,
        ):
            with registrations_held(registry):
                runs = [
                    run_deployment(DEPLOYMENT, parameters={"epochs": e}, timeout=0) for e in EPOCHS
                ]
                wait_for_two_running(client, runs, workers, logs)
            runs = wait_for_final(client, runs)
    finally:
        for worker in workers:
            stop(worker)
    ran_by = {str(r.id): worker_of(logs, str(r.id)) for r in runs}
    output = "".join(log.read_text() for log in [*logs, Path(server_env["_log"])])
    states = [r.state for r in runs]
    assert [s.name for s in states] == ["Completed"] * 3, output[-4000:]
    assert "database is locked" not in output
    assert "Traceback" not in Path(server_env["_log"]).read_text()
    assert set(ran_by.values()) == set(WORKERS), ran_by  # each worker took a run
    pairs = overlapping(runs)
    assert pairs and all(ran_by[a] != ran_by[b] for a, b in pairs), (pairs, ran_by)

    assert registry.verify() == []
    cards = registry.versions()
    assert sorted(c["version"] for c in cards) == [1, 2, 3]
    # each version made by the run it names: that run's epochs, trained for as many
    asked = {str(r.id): r.parameters["epochs"] for r in runs}
    assert {c["origin"]["flow_run_id"]: c["params"]["train"]["epochs"] for c in cards} == asked
    for card in cards:
        history = registry.read_file(card["version"], HISTORY_FILE).decode().splitlines()
        assert len(history) - 1 == card["params"]["train"]["epochs"], card["version"]
    mnist = load_mnist(Layout(workdir).data_dir)
    pixels = (mnist.test_images.numpy()[:, None] / 255.0).astype(np.float32)
    for card in cards:
        session = ort.InferenceSession(str(registry.fetch(card["version"], "model.onnx")))
        logits = session.run(["logits"], {"image": pixels})[0]
        accuracy = float((logits.argmax(1) == mnist.test_labels.numpy()).mean())
        assert accuracy == card["metrics"]["accuracy"], card["version"]
        net = build_model("classic")
        net.load_state_dict(load_state_dict(registry, card["version"]))
        reference = predict_logits(net, normalise(mnist.test_images), 1000).numpy()
        np.testing.assert_allclose(logits, reference, atol=1e-4)  # model.pt and model.onnx agree
