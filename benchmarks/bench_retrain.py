"""A "nothing changed" scheduled run against a running Prefect server: trigger to Completed.

Starts `prefect server start` on 127.0.0.1, registers one short model on real MNIST, serves the
deployment (`flows.serve`, polling every second), then triggers it `--runs` times: each run finds
a registered version with the same inputs fingerprint and trains nothing. Prints the median and
every time from `run_deployment` to the run's Completed state, and the CPU.

    python -m benchmarks.bench_retrain --runs 5 --mirror ../shared/mnist
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks.prefect_server import cpu_name, running_server
from tests.process_helpers import start, stop

REPO = Path(__file__).resolve().parents[1]
PARAMS = {
    "train": {"epochs": 1, "max_batches_per_epoch": 100},
    "evaluate": {"min_accuracy": 0.5},
    "schedule": {"deployment_name": "bench"},
}


def wait_for_deployment(name: str, log: Path, timeout: float = 120) -> None:
    """Until `flows.serve` has registered the deployment."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            try:
                client.read_deployment_by_name(name)
                return
            except ObjectNotFound:
                time.sleep(0.5)
    sys.exit(f"deployment {name} did not appear:\n{log.read_text()[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--mirror", default=os.environ.get("MNIST_MIRROR", "../shared/mnist"))
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-retrain-"))
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env |= {"MNIST_MIRROR": str(Path(args.mirror).resolve())}
    env |= {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    server = running_server(scratch, env)
    os.environ.update(server.env)  # this process is a client of that server too
    from prefect.deployments import run_deployment

    from flows.retrain import retrain

    workdir = scratch / "project"
    workdir.mkdir()
    (workdir / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    serve = None
    seconds: list[float] = []
    try:
        first = retrain(workdir=str(workdir))
        print(f"registered v{first['version']} ({first['accuracy']:.4f})", flush=True)
        serve = start(
            [sys.executable, "-m", "flows.serve", "--workdir", str(workdir)],
            server.env,
            scratch / "serve.log",
            REPO,
        )
        wait_for_deployment("mnist-retrain/bench", scratch / "serve.log")
        for i in range(args.runs + 1):  # the first run warms the serve process up
            started = time.perf_counter()
            flow_run = run_deployment("mnist-retrain/bench", timeout=120, poll_interval=0.1)
            elapsed = time.perf_counter() - started
            if flow_run.state is None or not flow_run.state.is_completed():
                sys.exit(f"run {i} ended {flow_run.state}:\n{(scratch / 'serve.log').read_text()}")
            if i:
                seconds.append(elapsed)
    finally:
        if serve is not None:
            stop(serve)
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    print("trigger -> Completed, s: " + ", ".join(f"{s:.2f}" for s in seconds))
    print(f"median {statistics.median(seconds):.2f} s (target <= 5 s); CPU: {cpu_name()}")


if __name__ == "__main__":
    main()
