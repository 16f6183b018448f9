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

from benchmarks.arguments import add_mirror_option, positive_int
from benchmarks.machine import cpu_name
from benchmarks.scratch import clean_up_on_sigterm
from tests.process_helpers import prefect_server, start, stop

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


def trigger_runs(scratch: Path, env: dict[str, str], runs: int) -> list[float]:
    """Register once, serve, then time `runs` triggered no-op runs (after one warm-up run)."""
    from prefect.deployments import run_deployment

    from flows.retrain import retrain

    workdir = scratch / "project"
    workdir.mkdir()
    (workdir / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    first = retrain(workdir=str(workdir))
    print(f"registered v{first['version']} ({first['accuracy']:.4f})", flush=True)
    log = scratch / "serve.log"
    serve = start([sys.executable, "-m", "flows.serve", "--workdir", str(workdir)], env, log, REPO)
    seconds: list[float] = []
    try:
        wait_for_deployment("mnist-retrain/bench", log)
        for i in range(runs + 1):  # the first run warms the serve process up
            started = time.perf_counter()
            flow_run = run_deployment("mnist-retrain/bench", timeout=120, poll_interval=0.1)
            elapsed = time.perf_counter() - started
            if flow_run.state is None or not flow_run.state.is_completed():
                sys.exit(f"run {i} ended {flow_run.state}:\n{log.read_text()[-3000:]}")
            if i:
                seconds.append(elapsed)
    finally:
        stop(serve)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=positive_int, default=5)
    add_mirror_option(parser)
    args = parser.parse_args()
    clean_up_on_sigterm()  # a timeout's SIGTERM still removes the scratch folder
    scratch = Path(tempfile.mkdtemp(prefix="bench-retrain-"))
    extra = {"MNIST_MIRROR": ",".join(args.mirror), "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    try:
        with prefect_server(scratch, **extra) as env:
            os.environ.update(env)  # this process is a client of that server too
            seconds = trigger_runs(scratch, env, args.runs)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print("trigger -> Completed, s: " + ", ".join(f"{s:.2f}" for s in seconds))
    print(f"median {statistics.median(seconds):.2f} s (target <= 5 s); CPU: {cpu_name()}")


if __name__ == "__main__":
    main()
