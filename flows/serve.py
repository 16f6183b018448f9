"""Serve the retraining flow as a deployment with a cron schedule (needs a real Prefect server).

    prefect server start                                # terminal 1 (or a shared server)
    export PREFECT_API_URL=http://127.0.0.1:4200/api
    python -m flows.serve                               # terminal 2: registers + runs on schedule

The process keeps running: it polls the server and executes scheduled and manual runs
(`prefect deployment run mnist-retrain/weekly`), and runs started by events: the deployment
carries a trigger that `mnist-pipeline data add` fires once `schedule.min_new_images` new images
arrived (mnist_pipeline/inbox/events.py), and one that `mnist-pipeline serve` fires when live
traffic drifts (mnist_pipeline/serving/drift.py); such a run's `reason` says which.

On one host, the deployment can go on a process work pool instead, run by workers that see this
checkout at the same path:

    prefect work-pool create mnist --type process
    python -m flows.serve --pool mnist                  # registers the deployment and exits
    prefect worker start --pool mnist                   # as many as you like

Beside `weekly`, both serve the sweep's deployments: `mnist-retrain/trial` (a trial: train one
config, register nothing) and `mnist-sweep/sweep` (flows/sweep.py; docs/scale-out.md). Served
from this process, trials run as many at once as the host's cores hold trainings of the params
file's train.num_threads threads (a concurrency limit on `trial`; the others wait their turn).

For workers on other machines, deploy prefect.yaml (`prefect deploy --all`): each run clones
the deployed commit into the worker's own folder (docs/scale-out.md).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import httpx
from prefect import serve
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import DeploymentApplyError
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from prefect.schedules import Cron

from flows.api_errors import api_errors
from flows.retrain import retrain
from flows.run_options import path_option
from flows.sweep import sweep
from mnist_pipeline.core.errors import one_line_errors
from mnist_pipeline.core.params import Params, load_params
from mnist_pipeline.core.schedule_checks import check_cron
from mnist_pipeline.core.service_params import TRIAL_DEPLOYMENT_NAME
from mnist_pipeline.inbox.events import inbox_trigger, server_configured
from mnist_pipeline.serving.drift_event import drift_trigger

REPO_ROOT = Path(__file__).resolve().parents[1]


def deployment_options(
    params: Params, workdir: str, params_file: str, cron: str | None = None
) -> dict[str, Any]:
    """The deployment's options from params.yaml's schedule section (prefect.yaml repeats them
    for workers on other machines; tests/test_prefect_yaml.py keeps the two equal)."""
    schedule = params.schedule
    return {
        "name": schedule.deployment_name,
        "schedules": [Cron(cron or schedule.cron, timezone=schedule.timezone)],
        # `mnist-pipeline data add` emits the first once enough new labelled digits arrived,
        # `mnist-pipeline serve` the second when live traffic drifts from MNIST test.
        "triggers": [
            inbox_trigger(params.registry.model_name),
            drift_trigger(params.registry.model_name),
        ],
        "parameters": {
            "workdir": workdir,
            "params_file": params_file,
            "notify_block": schedule.notify_block,
        },
        "concurrency_limit": ConcurrencyLimitConfig(
            limit=schedule.concurrency_limit,
            collision_strategy=ConcurrencyLimitStrategy(schedule.collision_strategy),
        ),
        "description": "Scheduled MNIST retraining: fetch, train, gate, export, parity, register.",
        "tags": ["mnist", "retraining"],
    }


def trial_options(workdir: str, params_file: str) -> dict[str, Any]:
    """The sweep's trial deployment of the retraining flow: no schedule, trigger or limit (the
    workers' own limits bound it; `main` adds one when this process runs them); a run trains and
    registers nothing unless told."""
    return {
        "name": TRIAL_DEPLOYMENT_NAME,
        "parameters": {"workdir": workdir, "params_file": params_file, "trial": True},
        "description": "A sweep's trial: train one config and report its validation accuracy.",
        "tags": ["mnist", "sweep"],
    }


def trials_at_once(threads: int, cores: int | None = None) -> int:
    """How many trials one host runs at once: the CPUs this process may use (its affinity, as a
    container's cpuset sets it) shared out to trials of `threads` torch threads each
    (train.num_threads), at least one. More would slow every one of them down."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // threads)


def sweep_options(workdir: str, params_file: str) -> dict[str, Any]:
    """The sweep's deployment (a run's `grid` is its parameter: a list of dotted overrides)."""
    return {
        "name": "sweep",
        "parameters": {"workdir": workdir, "params_file": params_file},
        "description": "Train a grid of configs as trials; register the best by validation.",
        "tags": ["mnist", "sweep"],
    }


def check_process_pool(name: str) -> None:
    """Exit 1 when work pool `name` is not a process pool: its deployments pull by changing to
    this checkout's folder, which a container or a remote job does not have. A pool that does
    not exist is left to the deployment's own error, which names it."""
    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(name)
        except ObjectNotFound:
            return
    if pool.type != "process":
        print(
            f"error: work pool {name!r} is of type {pool.type!r}: `--pool` deploys this "
            "checkout's folder for a process pool's workers on this host; deploy to other "
            "workers with `prefect deploy` (prefect.yaml clones the repository)",
            file=sys.stderr,
        )
        sys.exit(1)


def main(argv: list[str] | None = None) -> None:
    """Parse options, then serve the deployment until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workdir", default=".", type=path_option, help="repo root holding params.yaml and data/"
    )
    parser.add_argument(
        "--params",
        "--params-file",
        dest="params_file",
        default="params.yaml",
        type=path_option,
        help="params file, relative to --workdir (as flows.retrain and flows.sweep take it)",
    )
    parser.add_argument("--cron", help="override schedule.cron from params.yaml")
    parser.add_argument(
        "--pool", help="create the deployment on this process work pool and exit (no serving)"
    )
    args = parser.parse_args(argv)
    if args.pool is not None and not args.pool.strip():  # else deployments on no pool
        parser.error("--pool: a blank name names no work pool")
    if args.cron is not None:
        try:
            check_cron(args.cron)
        except ValueError as exc:
            parser.error(f"--cron: {exc}")  # a usage error: exit 2, as argparse's own
    workdir = Path(args.workdir).resolve()
    with one_line_errors():
        params = load_params(workdir / args.params_file)
    if server_configured() is None:  # Prefect would start a temporary server for this process
        print(
            "error: no Prefect API configured (set PREFECT_API_URL to a `prefect server start`): "
            "a temporary server would stop with this process, and the schedule with it",
            file=sys.stderr,
        )
        sys.exit(1)
    options = deployment_options(params, str(workdir), args.params_file, args.cron)
    trial = trial_options(str(workdir), args.params_file)
    if args.pool is None:  # this process starts every run: trials as many as the cores allow
        trial["concurrency_limit"] = ConcurrencyLimitConfig(
            limit=trials_at_once(params.train.num_threads),
            collision_strategy=ConcurrencyLimitStrategy.ENQUEUE,
        )
    deployments = [
        (retrain, "flows/retrain.py:retrain", options),
        (retrain, "flows/retrain.py:retrain", trial),
        (sweep, "flows/sweep.py:sweep", sweep_options(str(workdir), args.params_file)),
    ]
    if args.pool is None:
        # Stopping this process (a host restart) must not pause the schedule (Prefect's default
        # would, PrefectHQ/prefect#16363); pause on purpose with
        # `prefect deployment schedule pause`.
        with one_line_errors(), api_errors():
            serve(*(f.to_deployment(**o) for f, _, o in deployments), pause_on_shutdown=False)
        return
    with one_line_errors(), api_errors():
        check_process_pool(args.pool)
    for served, entrypoint, served_options in deployments:
        # Workers run the flow from this checkout (a set_working_directory pull step).
        source = served.from_source(source=str(REPO_ROOT), entrypoint=entrypoint)
        try:
            deployment_id = source.to_deployment(**served_options).apply(work_pool_name=args.pool)
        except (DeploymentApplyError, PrefectHTTPStatusError, httpx.HTTPError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            print(f"error: cannot deploy to work pool {args.pool!r}: {reason}", file=sys.stderr)
            sys.exit(1)
        print(f"deployment {served.name}/{served_options['name']} ({deployment_id})")
    print(f"on work pool {args.pool!r}; start a worker: prefect worker start --pool {args.pool}")


if __name__ == "__main__":
    main()
