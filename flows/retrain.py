"""The retraining flow: fetch, ingest, inputs (up to date?), train, evaluate, export, parity,
register (and, with `registry.approval: required`, wait for a person to approve production).

Every stage runs as a task through `mnist_pipeline.pipeline.stages.run`, as the CLI and `dvc
repro` do; nothing here computes. A flow run works in its own folder, runs/<flow-run>/, on a
hard-linked snapshot of the project's verified dataset and its own ingest of the project's
inbox; only the dataset folder (fetched under a lock), the inbox (read under its lock) and the
registry are shared. With `inbox.shared` set, the inbox is first brought in step with the one
on object storage (inbox/sync.py), so a worker trains on what every host added. A run trains
nothing when a registered version already has its inputs fingerprint (unless `force`). A
`trial` run (a sweep's) only trains and publishes its validation accuracy (flows/trials.py).
Run once: `python -m flows.retrain` (which, like the CLI, writes data/, models/ and reports/ in
the repository root)."""

from __future__ import annotations

import argparse
import time
from functools import partial
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import Completed, State
from pydantic import StrictFloat, StrictInt

import mnist_pipeline
from flows.api_errors import api_errors
from flows.approval import aliases_after, await_approval
from flows.artifacts import (
    best_effort,
    publish_ingest,
    publish_params,
    publish_rejected,
    publish_report,
    publish_up_to_date,
)
from flows.notify import check_block, notify_failure, notify_started
from flows.run_options import (
    fetch_worth_retrying,
    flow_overrides,
    merged_overrides,
    path_option,
    run_folder_name,
)
from flows.trials import publish_trial, trial_row
from mnist_pipeline.core import atomic
from mnist_pipeline.core.errors import GateError, StageFailed, one_line_errors
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.params import Params, load_params
from mnist_pipeline.inbox import dvc_claim
from mnist_pipeline.inbox import sync as inbox_sync
from mnist_pipeline.inbox.shared import open_shared
from mnist_pipeline.pipeline import runs, stages
from mnist_pipeline.pipeline.versions import open_registry
from mnist_pipeline.training.fingerprint import inputs_fingerprint


@task(cache_policy=NO_CACHE)
def run_stage(name: str, params: Params, layout: Layout, **options: Any) -> tuple[Any, float]:
    """One stage of the table (mnist_pipeline/pipeline/stages.py) and its seconds."""
    start = time.perf_counter()
    result = stages.run(name, params, layout, **options)
    return result, time.perf_counter() - start


@task(name="inputs", task_run_name="inputs", cache_policy=NO_CACHE)
def run_inputs(
    params: Params, data: Layout, layout: Layout, look_up: bool = True
) -> tuple[dict[str, Any], int | None]:
    """The run's own snapshot of the verified dataset in `data` (fetched again if it changed
    since the fetch task), its inputs fingerprint, and the registered version that already has
    that fingerprint (None: nothing to skip; not looked up without `look_up`: a sweep's trial
    registers nothing, so it needs no registry, nor its signing keys, on its worker)."""
    if layout.data_dir != data.data_dir:  # fetched again if it changed since the fetch task
        fetch = partial(stages.run, "fetch", params, data)  # verified, under the dataset lock
        runs.snapshot_fetching_again(data.data_dir, layout.data_dir, params.data.sha256, fetch)
    fingerprint = inputs_fingerprint(params, layout.data_dir, layout.extra_dir)
    if not look_up:
        return fingerprint, None
    registry = open_registry(params.registry, layout)
    found = registry.version_with_fingerprint(fingerprint["sha256"])
    folder = layout.registry_root(params.registry.root)
    if found is None and isinstance(folder, Path):  # it will register: a folder that cannot
        atomic.check_writable(folder)  # take files fails now, not after the training
    return fingerprint, found


# A store that fails briefly is tried again (a sync resumes where one stopped: inbox/sync.py).
@task(
    name="sync-inbox",
    task_run_name="sync-inbox",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=2,
)
def sync_inbox(params: Params, shared: Layout) -> str:
    """The project's inbox brought in step with the shared one (params `inbox.shared`), so
    ingest sees what every host added; each image not synced is logged with the reason."""
    store = open_shared(params.inbox.shared, shared)
    if store is None:
        return "no shared inbox"
    with dvc_claim.changing_inbox(shared.project, shared.inbox):  # not while DVC reads it
        result = inbox_sync.sync(store, shared.inbox, f"flow-run:{flow_run.name or 'local'}")
    for sha, problem in result.problems.items():
        print(f"not synced: {sha}: {problem}")
    for warning in result.warnings:
        print(f"warning: {warning}")
    summary = f"shared inbox {store.location}: {result.summary()}"
    print(summary)
    return summary


# One task per stage, named after it; of the stages only fetch touches the network, so only
# fetch is retried (when the network or a server failed it).
STAGE_TASKS = {
    name: run_stage.with_options(name=name, task_run_name=name) for name in stages.STAGES
}
STAGE_TASKS["fetch"] = STAGE_TASKS["fetch"].with_options(
    retries=2, retry_delay_seconds=2, retry_condition_fn=fetch_worth_retrying
)


def _value(name: str, state: State) -> Any:
    """The value of a finished task; a failure is raised naming its stage."""
    try:
        return state.result()
    except Exception as exc:
        raise StageFailed.of(name, exc) from exc


def _run(
    name: str, params: Params, layout: Layout, upstream: list[Any], **options: Any
) -> tuple[Any, Any]:
    """Run one stage task after `upstream`; returns (its state, its value)."""
    task = STAGE_TASKS[name]
    state = task(name, params, layout, **options, wait_for=upstream, return_state=True)
    return state, _value(name, state)


# A crash (the run's process died, or Prefect refused its parameters) notifies like a failure,
# and so does a cancellation (from the UI, or `prefect flow-run cancel`).
@flow(
    name="mnist-retrain",
    log_prints=True,
    on_failure=[notify_failure],
    on_crashed=[notify_failure],
    on_cancellation=[notify_failure],
)
def retrain(
    epochs: StrictInt | None = None,  # strict, as params.yaml: `true` or "3" is refused, not 1 or 3
    learning_rate: StrictFloat | None = None,
    min_accuracy: StrictFloat | None = None,
    mirror: str | None = None,
    force: bool = False,
    isolated: bool = True,
    notify_block: str | None = None,
    workdir: str = ".",
    params_file: str = "params.yaml",
    overrides: dict[str, Any] | None = None,
    trial: bool = False,
    reason: str | None = None,
) -> dict[str, Any] | State:
    """Retrain, gate, export, check and register; a no-op when nothing changed (unless force).

    `isolated` (default) writes into runs/<flow-run>/; False writes models/ and reports/ in
    `workdir` as the CLI does. `notify_block` names a notification block told about a failure,
    about the start of a run that has a `reason` (what started it: the deployment's event
    triggers set it, e.g. drift of the served model's live traffic), and about a version that
    waits for approval.
    `overrides` are dotted params (`{"train.seed": 2}`), as the named ones. A `trial` (a sweep's)
    only trains, always, registers nothing and publishes its validation accuracy (`mnist-trial`).
    """
    started = time.perf_counter()
    if reason:
        print(f"started because: {reason}")
    if check_block(notify_block) and reason:  # a block that cannot be used: logged, once
        notify_started(notify_block, flow_run.name or "(no name)", reason)
    project = Path(workdir).resolve()
    named = flow_overrides(epochs, learning_rate, min_accuracy, mirror)
    params = load_params(project / params_file, merged_overrides(overrides, named))
    publish_params(params)
    shared = Layout(project)  # the verified dataset (fetched under a lock) and the registry
    layout = Layout.for_run(project, run_folder_name()) if isolated else shared
    print(f"run folder: {layout.root}; code: {Path(mnist_pipeline.__file__).parent}")
    if not isolated:
        return _stages(params, shared, layout, force, trial, started)
    holding = runs.running(layout.root)  # prune never deletes the folder of a run still going
    try:
        runs.prune(project, params.schedule.keep_runs, current=layout.root)
        return _stages(params, shared, layout, force, trial, started)
    finally:
        holding.release()


def _stages(
    params: Params, shared: Layout, layout: Layout, force: bool, trial: bool, started: float
) -> dict[str, Any] | State:
    """The run's tasks in `layout`, from fetch to registration (and the approval it waits for);
    `shared` holds the verified dataset and the registry."""
    timings: dict[str, float] = {}
    data = shared  # the project's data/mnist, unless the run is of other data than the project's
    if layout != shared and not runs.fetches_into_project(params.data.sha256, shared.project):
        data = layout
    state, (_, timings["fetch"]) = _run("fetch", params, data, [])
    if params.inbox.shared is not None:  # other hosts' digits into the project's inbox first
        state = sync_inbox(params, shared, wait_for=[state], return_state=True)
        _value("sync-inbox", state)
    # The project's inbox, preprocessed into this run's folder (a bad file is listed, not fatal).
    # A trial registers nothing: the digits stay new for the retraining trigger's count.
    taking = {"take_pending": False} if trial else {}
    state, (ingested, timings["ingest"]) = _run("ingest", params, layout, [state], **taking)
    publish_ingest(ingested)
    checked = run_inputs(params, data, layout, not trial, wait_for=[state], return_state=True)
    fingerprint, same = _value("inputs", checked)
    if trial:  # a sweep's trial: train only (never evaluated on the test set)
        _, (trained, _) = _run("train", params, layout, [checked])
        row = trial_row(layout, trained.val_accuracy)
        publish_trial(row)
        message = f"trained, not registered: val accuracy {trained.val_accuracy}"
        print(message)
        return Completed(message=message, data={"up_to_date": False, **row})
    if same is not None and not force:
        message = f"up to date: v{same} has the same inputs"
        print(f"{message} (fingerprint {fingerprint['sha256'][:12]}); nothing trained")
        # nothing to do: a report that cannot be published is a warning, not a failed run
        best_effort(
            "publish the up-to-date report", partial(publish_up_to_date, params, same, fingerprint)
        )
        # A Completed state with that message (the runs list shows it); its result is the dict,
        # also published as its trial row (a sweep reads which version has its winner's inputs).
        result = {"up_to_date": True, "version": same, "fingerprint": fingerprint["sha256"]}
        best_effort("publish the trial row", lambda: publish_trial(result))
        return Completed(message=message, data=result)
    results: dict[str, Any] = {}
    upstream = [checked]
    for name in ("train", "evaluate", "export", "parity", "register"):
        # Unless forced, register stores nothing if a run that finished meanwhile registered
        # the same inputs (checked again under the registry's lock).
        options = {"skip_same_inputs": not force} if name == "register" else {}
        try:
            state, (results[name], timings[name]) = _run(name, params, layout, upstream, **options)
        except StageFailed as failed:
            if isinstance(failed.__cause__, GateError):  # the gate or parity said no
                report = partial(publish_rejected, layout, failed.stage, str(failed))
                best_effort("publish the rejected candidate's report", report)  # never hiding why
            raise
        upstream = [state]
    registration = results["register"]
    # The version is committed: from here on a report that cannot be published (the Prefect API
    # or the store briefly away) is a warning, not the run's failure.
    trained = trial_row(layout, results["train"].val_accuracy)
    row = trained | {"version": registration.version, "registered": registration.registered}
    best_effort("publish the trial row", lambda: publish_trial(row))
    wall = time.perf_counter() - started
    overhead = wall - sum(timings.values())
    print(  # log_prints: a log line in a flow run, plain output under .fn()
        f"{registration.summary()}; flow {wall:.1f} s, tasks {sum(timings.values()):.1f} s, "
        f"overhead {overhead:.1f} s"
    )
    registry = open_registry(params.registry, layout)
    best_effort(
        "publish the run's report", partial(publish_report, params, layout, results, registry)
    )
    result = {
        "up_to_date": False,
        "version": registration.version,
        "registered": registration.registered,
        "alias": registration.alias,
        "accuracy": results["evaluate"].accuracy,
        "fingerprint": fingerprint["sha256"],
        "run_folder": str(layout.root),
        "seconds": {"flow": wall, "tasks": timings, "overhead": overhead},
    }
    if registration.pending is None:
        return result
    # Held back for approval: the run pauses (its report already on its page) for an answer.
    settled = await_approval(registry, registration, params.registry.approval_timeout_s)
    alias = aliases_after(registry, registration.version, settled)
    result |= {"alias": alias, "approval": settled.outcome}
    return Completed(message=settled.message, data=result)


def main(argv: list[str] | None = None) -> None:
    """`python -m flows.retrain [--force] [--params FILE]`: one run, in the repository root like
    the CLI (FILE relative to it, e.g. recipes/quick.yaml)."""
    parser = argparse.ArgumentParser(description="Run the retraining flow once.")
    parser.add_argument("--force", action="store_true", help="retrain even if up to date")
    parser.add_argument(
        "--params", default="params.yaml", type=path_option, help="params file [params.yaml]"
    )
    args = parser.parse_args(argv)
    with one_line_errors():  # Prefect logs a failed run's traceback; the error ends it once
        load_params(Path(args.params))  # a bad params file: told before a server starts
        with api_errors():
            retrain(force=args.force, isolated=False, params_file=args.params)


if __name__ == "__main__":
    main()
