"""The sweep flow: train a small grid of configs on the work pool, register the best.

Phase 1 starts one child run per config of the trial deployment (`run_deployment`, parameters
`overrides` = the config and `trial=True`): each trains on whichever worker takes it and
publishes its validation accuracy as the `mnist-trial` artifact (flows/trials.py), read back
over the API (workers share no folder with this run). A sweep that ends in this phase (an
error, a failed start, Ctrl-C) cancels the trials it started: Prefect cancels a parent's
children only when the parent itself is cancelled; one that ends while the winner registers
cancels that run too. Phase 2 picks the best by validation
accuracy (a tie: the earliest config; failed trials are reported and left out) and starts one
more run of the registering deployment with that config: training is deterministic for given
params and data, so it retrains the winner, which is then gated, exported and registered as any
retraining. The grid is checked whole before any child starts (mnist_pipeline/pipeline/sweep.py).

    python -m flows.sweep grid.yaml     # a YAML list of configs; needs the deployments
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path, PurePosixPath
from typing import Any
from uuid import UUID

import yaml
from prefect import flow, get_run_logger
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.runtime import flow_run
from pydantic import StrictFloat

from flows.api_errors import api_errors
from flows.child_runs import NotFinished, cancel_unfinished, wait_all, wait_registering
from flows.run_options import path_option
from flows.trials import read_trial
from mnist_pipeline.core.errors import (
    ParamsError,
    PipelineError,
    describe_os_error,
    one_line_errors,
)
from mnist_pipeline.core.params_file import MAX_BYTES
from mnist_pipeline.core.regular_file import read_regular
from mnist_pipeline.core.service_params import TRIAL_DEPLOYMENT_NAME
from mnist_pipeline.core.yaml_text import describe_yaml_error, load_yaml_strict
from mnist_pipeline.inbox.events import server_configured
from mnist_pipeline.pipeline.sweep import (
    Trial,
    check_grid,
    pick_best,
    registering_outcome,
    summary_lines,
)

RETRAIN_FLOW = "mnist-retrain"  # flows/retrain.py's flow: what every child run is
TRIAL_DEPLOYMENT = f"{RETRAIN_FLOW}/{TRIAL_DEPLOYMENT_NAME}"


def check_retraining(which: str, name: str) -> None:
    """ParamsError unless `name` is a deployment of the retraining flow, `mnist-retrain/NAME`
    (Prefect names a deployment by its flow's name first): another flow's run would take no
    params_file, overrides and trial, and fail only after the trials have trained."""
    flow_name, _, deployment = name.partition("/")
    if flow_name != RETRAIN_FLOW or not deployment:
        raise ParamsError(
            f"sweep: {which} {name!r} is not a deployment of the retraining flow: "
            f"expected {RETRAIN_FLOW}/<deployment name>, as `prefect deployment ls` lists them"
        )


def check_deployments(client: SyncPrefectClient, names: list[str]) -> None:
    """PipelineError naming every deployment of `names` the server does not have."""
    missing = []
    for name in dict.fromkeys(names):
        try:
            client.read_deployment_by_name(name)
        except ObjectNotFound:
            missing.append(name)
    if missing:
        raise PipelineError(
            f"sweep: no deployment {', '.join(missing)} on the Prefect server: deploy first "
            "(prefect deploy --all, or python -m flows.serve)"
        )


def trial_of(client: SyncPrefectClient, index: int, config: dict[str, Any], run: FlowRun) -> Trial:
    """What child `run` of config `index` reported (an error when it failed or reported none)."""
    state = run.state
    if state is None or not state.is_completed():
        name = "no state" if state is None else state.name
        message = "" if state is None or not state.message else f": {state.message}"
        return Trial(index, config, flow_run=str(run.id), error=f"run {run.name} {name}{message}")
    row = read_trial(client, run.id)
    if row is None or row.get("val_accuracy") is None:
        return Trial(index, config, flow_run=str(run.id), error=f"run {run.name} reported no trial")
    return Trial(
        index,
        config,
        val_accuracy=float(row["val_accuracy"]),
        fingerprint=row.get("fingerprint"),
        state_dict_sha256=row.get("state_dict_sha256"),
        flow_run=str(run.id),
        data=(row.get("dataset_sha256"), row.get("extra_sha256")),
    )


def start_child(
    deployment: str, params_file: str, config: dict[str, Any], trial: bool, tag: str
) -> UUID:
    """One child run of `deployment` with `config` as its overrides; returns its id. Its
    idempotency key (the sweep's run, its attempt and `tag`) makes a create the client retried
    after a lost answer return the run it made, not a second one; a retried sweep (the same
    flow run, run again) starts children of its own."""
    parameters = {"params_file": params_file, "overrides": config, "trial": trial}
    key = f"{flow_run.id}:{flow_run.run_count}:{tag}" if flow_run.id else None
    run = run_deployment(
        deployment, parameters=parameters, timeout=0, tags=["sweep", tag], idempotency_key=key
    )
    return run.id


@contextmanager
def _cancelled_on_exit(client: SyncPrefectClient, ids: list[UUID], logger: Any) -> Iterator[None]:
    """Cancel the child runs of `ids` (filled inside) when the block ends on an error, a failed
    start or Ctrl-C: Prefect cancels a parent's children only when the parent is cancelled."""
    try:
        yield
    except NotFinished:  # the timeout: what ran is cancelled, what is queued left to run
        raise
    except BaseException as exc:
        why = f"sweep {flow_run.name or ''} stopped: {type(exc).__name__}: {exc}"[:500]
        for problem in cancel_unfinished(client, ids, why):
            logger.warning("sweep: %s", problem)
        raise


@flow(name="mnist-sweep", log_prints=True)
def sweep(
    grid: list[dict[str, Any]],
    workdir: str = ".",
    params_file: str = "params.yaml",
    trial_deployment: str = TRIAL_DEPLOYMENT,
    register_deployment: str | None = None,
    timeout_s: StrictFloat = 3600,  # strict: `true` is refused, not 1 second
) -> dict[str, Any]:
    """Train every config of `grid` (dotted `model.*`/`train.*` overrides of `params_file`,
    a path each child reads in its own project folder) as child runs of `trial_deployment`,
    then retrain and register the best by validation accuracy through `register_deployment`
    (default: the retraining deployment `schedule.deployment_name` names). `timeout_s` bounds
    each wait: the trials', then the registering run's. `workdir` is only where the grid is
    checked before any child starts (and the registering deployment's name read): the
    children run in their deployments' own folders, which should hold the same `params_file`.
    Fails when the grid,
    `timeout_s` or a deployment is bad (before any child starts), when no trial succeeded, or
    when the registering run fails."""
    checked = check_grid(grid, Path(workdir).resolve() / params_file)  # before any child
    if not timeout_s > 0:
        raise ParamsError(f"sweep: timeout_s must be a number of seconds > 0, got {timeout_s}")
    if register_deployment is None:
        register_deployment = f"{RETRAIN_FLOW}/{checked[0][1].schedule.deployment_name}"
    check_retraining("trial_deployment", trial_deployment)
    check_retraining("register_deployment", register_deployment)
    configs = [config for config, _ in checked]
    with get_client(sync_client=True) as client:
        check_deployments(client, [trial_deployment, register_deployment])
        logger = get_run_logger()
        if (warning := params_path_warning(params_file)) is not None:
            logger.warning(warning)
        ids: list[UUID] = []
        with _cancelled_on_exit(client, ids, logger):
            for i, config in enumerate(configs):
                ids.append(start_child(trial_deployment, params_file, config, True, f"trial-{i}"))
            runs = wait_all(client, ids, timeout_s, late_cancelled=True)  # late: failed trials
        trials = [
            trial_of(client, i, c, r) for i, (c, r) in enumerate(zip(configs, runs, strict=True))
        ]
        for trial in trials:
            if not trial.ok:
                logger.warning("sweep: grid[%d] failed: %s", trial.index, trial.error)
        data = {trial.data for trial in trials if trial.ok}
        unknown = any(None in (d or (None,)) for d in data)  # a worker of an older version
        if not unknown and len(data) > 1:  # workers without a shared inbox, digits meanwhile
            logger.warning(
                "sweep: the trials trained on %d different datasets (MNIST and labelled digits): "
                "their validation accuracies compare the data as much as the configs",
                len(data),
            )
        best = pick_best(trials)  # fails only when no trial succeeded
        print("\n".join(["trials (* best by validation accuracy):", *summary_lines(trials, best)]))
        winner: list[UUID] = []
        with _cancelled_on_exit(client, winner, logger):  # stopped: it registers nothing
            winner.append(
                start_child(register_deployment, params_file, best.config, False, "winner")
            )
            final, awaiting = wait_registering(client, winner[0], timeout_s)
        if not (final.state.is_completed() or awaiting):
            why = final.state.message or "no message: see its log"
            if "concurrency limit" in why.lower():  # Prefect's CANCEL_NEW: dropped, not queued
                why += (
                    f" ({register_deployment} was busy and its concurrency limit's "
                    "collision_strategy cancels a new run: with ENQUEUE it waits for the slot; "
                    "run the sweep again, or retrain with the winning config by hand)"
                )
            raise PipelineError(f"sweep: registering run {final.name} {final.state.name}: {why}")
        retrained = read_trial(client, final.id)
    if retrained is None:  # its artifact could not be published (a warning in its log)
        logger.warning("sweep: registering run %s published no trial row: see its log", final.name)
    registered = registering_outcome(retrained, best, final.state.message, awaiting)
    if registered.same_inputs is False:
        logger.warning("sweep: the registering run trained other inputs than the winning trial")
    elif registered.reproduced is False:  # e.g. a worker with another CPU: its own weights
        logger.warning("sweep: the registering run's weights differ from the trial's")
    outcome = registered.outcome
    print(f"best grid[{best.index}] {best.config}: run {final.name}: {outcome}")
    return {
        "best": best.index,
        "config": best.config,
        "val_accuracy": best.val_accuracy,
        "trials": [asdict(t) for t in trials],
        "registering_run": str(final.id),
        "version": registered.version,
        "outcome": outcome,
        "retrained": retrained,
        "reproduced": registered.reproduced,
        "same_inputs": registered.same_inputs,
        "same_data": None if unknown else len(data) <= 1,
    }


def params_path_warning(params_file: str) -> str | None:
    """Why `params_file` may name nothing on another host (None: a path inside the project):
    every child reads it in its own project folder, a clone of the repository on a worker of
    another host, where this machine's absolute path, or one outside the project, names
    nothing (or another file). On one host (`python -m flows.serve`) it works."""
    path = PurePosixPath(params_file)
    if path.is_absolute() or ".." in path.parts:
        return (
            f"sweep: params_file {params_file!r} is not a path inside the project: a child on "
            "another host reads it in its own clone, where it names another file or none "
            "(commit the file and name it relative to the project's root)"
        )
    return None


def read_grid(path: Path) -> Any:
    """A grid file's configs (YAML); an unreadable or malformed file is one ParamsError."""
    try:
        return load_yaml_strict(read_regular(path, MAX_BYTES).decode("utf-8"))
    except OSError as exc:
        raise ParamsError(f"sweep grid file: cannot read it ({describe_os_error(exc)})") from None
    except UnicodeDecodeError as exc:
        raise ParamsError(f"sweep grid file {path}: cannot read it ({exc})") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"sweep grid file {path}: {describe_yaml_error(exc)}") from None


def main(argv: list[str] | None = None) -> None:
    """`python -m flows.sweep GRID.yaml`: one sweep (the deployments must exist). A bad grid
    or params file is one `error:` line and exit status 2 before Prefect starts; a sweep that
    fails is one line and exit status 1."""
    parser = argparse.ArgumentParser(description="Sweep a grid of configs; register the best.")
    parser.add_argument(
        "grid", type=path_option, help="YAML list of configs (dotted model.* and train.* overrides)"
    )
    parser.add_argument(
        "--params", default="params.yaml", type=path_option, help="params file [params.yaml]"
    )
    args = parser.parse_args(argv)
    with one_line_errors():  # Prefect logs a failed run's traceback; the error ends it once
        grid = read_grid(Path(args.grid))
        check_grid(grid, Path(args.params).resolve())  # no server for a grid it would refuse
        if server_configured() is None:  # else a temporary server, which has no deployments
            raise PipelineError(
                "no Prefect API configured (set PREFECT_API_URL): a sweep starts runs of the "
                "deployments on a Prefect server"
            )
        with api_errors():
            sweep(grid=grid, params_file=args.params)


if __name__ == "__main__":
    main()
