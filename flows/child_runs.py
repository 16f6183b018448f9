"""Waiting for a sweep's child runs over the Prefect API, and cancelling those it leaves:
a run is done once final, or (a registering run) once it waits for a person's approval."""

from __future__ import annotations

import time
from uuid import UUID

from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterParentFlowRunId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.states import Cancelled, Cancelling

from mnist_pipeline.core.errors import PipelineError

POLL_S = 2.0
READ_TRIES = 5  # a run read again after 2, 4, 8 and 16 s before the wait fails


def awaits_approval(client: SyncPrefectClient, run: FlowRun) -> bool:
    """Whether `run` waits for a person: paused itself, or running while one of its subflow
    runs is paused (the retrain flow pauses only its `approval` subflow)."""
    state = run.state
    if state is None or state.is_paused():
        return state is not None
    if not state.is_running():
        return False
    children = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run.id]),
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])),
        ),
        limit=1,
        offset=0,
    )
    return bool(children)


def wait_all(
    client: SyncPrefectClient,
    ids: list[UUID],
    timeout_s: float,
    paused_is_done: bool = False,
    keep_queued: bool = False,
    late_cancelled: bool = False,
) -> list[FlowRun]:
    """The flow runs `ids` once every one is final (or, with `paused_is_done`, waiting for a
    person's approval of its registration: `awaits_approval`). After `timeout_s`, those still
    going are cancelled (a worker stops their process), except, with `keep_queued`, a run not
    yet started (queued for a concurrency slot or a worker), which is left to run when it gets
    one, and which, once started, has `timeout_s` from then (its time in the queue is not its
    own); a PipelineError names each with its state, or, with `late_cancelled`, the runs are
    returned as they are then (the cancelled ones Cancelling, saying why). A read the API
    fails is tried again for about half a minute (its database restarting) before it fails."""

    def done(run: FlowRun) -> bool:
        state = run.state
        if state is None:
            return False
        return state.is_final() or (paused_is_done and awaits_approval(client, run))

    since = time.monotonic()
    started: dict[UUID, float] = {}  # with keep_queued: when each run was first seen started
    while True:
        runs = [read_run(client, i) for i in ids]
        now = time.monotonic()
        if all(done(r) for r in runs):
            return runs
        for run in runs:
            if keep_queued and not _not_started(run):
                started.setdefault(run.id, now)
        waiting = [r for r in runs if not done(r)]
        if any(now > started.get(r.id, since) + timeout_s for r in waiting):
            queued = [r for r in waiting if keep_queued and _not_started(r)]
            cancelled = [r for r in waiting if r not in queued]
            for run in cancelled:
                cancel(client, [run.id], _why_cancelled(run, timeout_s))
            if late_cancelled and not queued:
                return [read_run(client, i) for i in ids]
            told = [f"cancelled: {_named(cancelled)}"] if cancelled else []
            if queued:
                told.append(f"left queued, to run when it starts: {_named(queued)}")
            raise NotFinished(
                f"sweep: child runs not finished after {timeout_s:.0f} s; {'; '.join(told)}"
            )
        time.sleep(POLL_S)


def read_run(client: SyncPrefectClient, run_id: UUID) -> FlowRun:
    """`client.read_flow_run`, tried again on a failure (READ_TRIES tries, waits doubling from
    POLL_S: about half a minute), since one failed read would end the whole wait."""
    for attempt in range(READ_TRIES):
        try:
            return client.read_flow_run(run_id)
        except Exception:  # noqa: BLE001 - the API's database restarting, a dropped connection
            if attempt == READ_TRIES - 1:
                raise
            time.sleep(POLL_S * 2**attempt)
    raise AssertionError("unreachable")


class NotFinished(PipelineError):
    """Child runs were still going at the timeout: those running are cancelled already, those
    still queued left to run when they start (the message names which)."""


def cancel(client: SyncPrefectClient, ids: list[UUID], why: str) -> None:
    """Cancel the runs `ids` (a worker stops their process): never left training for nobody.
    One final or cancelling already is left as it is. Cancelling is proposed, never forced, so
    a run that ends between the read and the proposal keeps its final state (the server aborts
    the proposal); a run not yet started has no process to stop, and the server cancels it at
    once, without the reason, which is then added (a Cancelled run stays Cancelled)."""
    for run_id in ids:
        now = client.read_flow_run(run_id).state
        if now is not None and (now.is_final() or now.is_cancelling()):
            continue
        result = client.set_flow_run_state(run_id, Cancelling(message=why))
        ended = result.state
        if ended is not None and ended.type == StateType.CANCELLED and not ended.message:
            client.set_flow_run_state(run_id, Cancelled(message=why))


def cancel_unfinished(client: SyncPrefectClient, ids: list[UUID], why: str) -> list[str]:
    """Cancel the runs of `ids` not yet final or cancelling, as far as the API answers (a
    sweep ending on an error or an interrupt); returns what could not be done, one line each."""
    problems = []
    for run_id in ids:
        try:
            cancel(client, [run_id], why)
        except Exception as exc:  # noqa: BLE001 - the API down: the sweep's own error goes on
            problems.append(f"child run {run_id} not cancelled: {type(exc).__name__}: {exc}")
    return problems


def _why_cancelled(run: FlowRun, timeout_s: float) -> str:
    """Why the sweep cancels `run` at its timeout: not finished, or (still Scheduled, Late or
    AwaitingConcurrencySlot: no worker picked it up) not started, naming the state."""
    state = run.state
    if state is not None and state.type == StateType.SCHEDULED:
        return (
            f"sweep: not started after {timeout_s:.0f} s (still {state.name}: no free worker, "
            "or the deployment's concurrency limit full)"
        )
    return f"sweep: not finished after {timeout_s:.0f} s"


def _not_started(run: FlowRun) -> bool:
    """Queued: scheduled, waiting for a concurrency slot (AwaitingConcurrencySlot), pending."""
    return run.state is not None and run.state.type in (StateType.SCHEDULED, StateType.PENDING)


def _named(runs: list[FlowRun]) -> str:
    return ", ".join(f"{r.name} ({r.state.name if r.state else 'no state'})" for r in runs)


def wait_registering(
    client: SyncPrefectClient, run_id: UUID, timeout_s: float
) -> tuple[FlowRun, bool]:
    """The registering run once it is final or waits for approval (registry.approval:
    required: registered and paused is a result too), and whether it waits. An approval
    answered between `wait_all`'s look and the next one lets the run go on: wait again."""
    while True:
        (run,) = wait_all(client, [run_id], timeout_s, paused_is_done=True, keep_queued=True)
        awaiting = awaits_approval(client, run)
        if awaiting or (run.state is not None and run.state.is_final()):
            return run, awaiting
