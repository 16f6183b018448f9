"""Serve the retraining flow as a deployment with a cron schedule (needs a real Prefect server).

    prefect server start                                # terminal 1 (or a shared server)
    export PREFECT_API_URL=http://127.0.0.1:4200/api
    python -m flows.serve                               # terminal 2: registers + runs on schedule

The process keeps running: it polls the server and executes scheduled and manual runs
(`prefect deployment run mnist-retrain/weekly`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from prefect.schedules import Cron

from flows.retrain import retrain
from mnist_pipeline.params import load_params


def main(argv: list[str] | None = None) -> None:
    """Parse options, then serve the deployment until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=".", help="repo root holding params.yaml and data/")
    parser.add_argument("--params-file", default="params.yaml")
    parser.add_argument("--cron", help="override schedule.cron from params.yaml")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir).resolve()
    schedule = load_params(workdir / args.params_file).schedule
    retrain.serve(
        name=schedule.deployment_name,
        schedules=[Cron(args.cron or schedule.cron, timezone=schedule.timezone)],
        parameters={"workdir": str(workdir), "params_file": args.params_file},
        description="Scheduled MNIST retraining: fetch, train, gate, export, parity, register.",
        tags=["mnist", "retraining"],
    )


if __name__ == "__main__":
    main()
