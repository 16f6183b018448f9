"""The retraining flow's approval step: a subflow waits until a person approves the version.

When register held a version back for approval (`registry.approval: required`), the retraining
run starts the subflow `approval` (run `approve-v<N>`), which tags its own run
`awaiting-approval:<model>:v<N>` and `...:v<N>:<card>` and pauses it with
`pause_flow_run(wait_for_input=ApprovalInput)`: the Prefect UI shows a Resume form (approve,
comment, who) on that run, and `mnist-pipeline models approve|reject N` answers it through the
API. The retraining run stays Running meanwhile: a deployment run that paused itself would give
back its deployment concurrency slot, and the engine's next renewal of the lease would fail and
cancel it; a subflow has no deployment, so its pause releases nothing. The retraining run then
records the outcome in the registry (mnist_pipeline/pipeline/approval.py) and tags both runs
`approval:<outcome>`. An approval nobody answers within `registry.approval_timeout_s` is set
running again (Prefect would otherwise fail it) and the version stays staging; so it does at
once on a temporary Prefect server (no `PREFECT_API_URL`: nothing could answer it there), and
so it does when the retraining run is stopped (cancelled, terminated or interrupted) while it
waits. The run's `notify_block`, if any, is told when the version starts waiting and when the
wait expires (and, through the flow's hooks, when the run fails, crashes or is cancelled).
"""

from __future__ import annotations

from dataclasses import replace

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.exceptions import FlowPauseTimeout, TerminationSignal
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.runtime import flow_run
from prefect.states import Completed, Running, State
from pydantic import Field

from flows.artifacts import best_effort, tag_run
from flows.notify import tell
from mnist_pipeline.core.errors import StoreError
from mnist_pipeline.core.text import printable
from mnist_pipeline.inbox.events import server_configured
from mnist_pipeline.pipeline import announce
from mnist_pipeline.pipeline.approval import Answer, Settled, expire, settle, version_tags
from mnist_pipeline.registry import Registration, Registry
from mnist_pipeline.registry.aliases import MAX_ACTOR, MAX_COMMENT

POLL_S = 10  # how often a paused run checks whether it was answered


class ApprovalInput(RunInput):
    """The answer a paused approval run waits for."""

    approve: bool
    comment: str = Field("", max_length=MAX_COMMENT)
    who: str | None = Field(None, max_length=MAX_ACTOR)  # the actor; empty: the UI of the run

    def answer(self) -> Answer:
        """The answer, its line breaks and other control characters kept as their escapes (a
        form's comment of two lines still answers; the audit trail keeps one line). A `who`
        left blank in the form (spaces only) is the UI of the run, as an empty one is: the
        person was told the answer was taken, so it must not fail the run."""
        comment = printable(self.comment)[:MAX_COMMENT]
        who = printable(self.who.strip())[:MAX_ACTOR] if self.who else ""
        return Answer(self.approve, comment, who or None)


@flow(name="approval", flow_run_name="approve-v{version}", log_prints=True)
def approval(version: int, timeout_s: int, tags: list[str]) -> State:
    """Tag this run `tags` (pipeline.approval.version_tags: waiting for approval of
    v`version`) and pause it until it is answered (the state's result: an Answer) or
    `timeout_s` pass (None)."""
    # `models approve` finds the run by these tags; the UI's Resume works without them
    tagged = best_effort("tag the approval run", lambda: tag_run(*tags))
    cli = f"`mnist-pipeline models approve {version} --comment TEXT` (or reject)"
    print(
        f"v{version} awaits approval for production: Resume this run in the Prefect UI"
        + (f", or {cli}" if tagged else f" ({cli} cannot find it: its tag could not be set)")
    )
    try:
        given = pause_flow_run(
            wait_for_input=ApprovalInput, timeout=timeout_s, poll_interval=min(POLL_S, timeout_s)
        )
    except FlowPauseTimeout:
        _run_again("no answer to the approval in time")
        return Completed(message=f"no answer within {timeout_s} s", data=None)
    answer = given.answer()
    by = f" by {answer.who}" if answer.who else ""
    verb = "approve" if answer.approve else "reject"
    return Completed(message=f"answered: {verb} v{version}{by}", data=answer)


def await_approval(registry: Registry, registration: Registration, timeout_s: int) -> Settled:
    """Wait, in the `approval` subflow, until the proposal of `registration`'s version for
    production is answered or `timeout_s` pass; record and return the outcome."""
    version, actor = registration.version, announce.current_actor()
    # no run to pause (retrain.fn()), or a temporary server that `models approve` cannot reach
    # and that stops with the run: nobody could answer, so nothing waits; the audit trail says so
    if not flow_run.id or server_configured() is None:
        where = "not in a flow run" if not flow_run.id else "on a temporary Prefect server"
        why = f"{where}: nobody can approve v{version} here"
        return _expired_at_once(registry, version, why, actor)
    try:
        waiting = version_tags(registry, version)  # reads the card: before anyone is told
    except (StoreError, OSError) as exc:  # the store briefly away: the version is committed
        why = f"v{version}'s card could not be read to wait for an answer ({exc})"
        return _expired_at_once(registry, version, why, actor)
    slug = (flow_run.parameters or {}).get("notify_block")  # the retraining run's
    run_name = flow_run.name or str(flow_run.id)
    try:
        tell(
            slug,
            f"mnist-retrain run {run_name}: {registry.name} v{version} awaits approval",
            f"Resume flow run approve-v{version} in the Prefect UI, or run `mnist-pipeline "
            f"models approve {version} --comment TEXT` (or reject). Unanswered after "
            f"{timeout_s} s, it stays staging.",
        )
        state = approval(version, timeout_s, list(waiting), return_state=True)
    except (TerminationSignal, KeyboardInterrupt) as stop:  # the retraining run is stopped
        # SIGTERM: a cancellation, or the process terminated (an eviction, `kill`)
        terminated = isinstance(stop, TerminationSignal)
        how = "stopped (cancelled or terminated)" if terminated else "interrupted"
        why = f"the run was {how} while v{version} waited for approval"
        best_effort(
            "record the proposal's expiry in the audit trail",
            lambda: expire(registry, version, why, actor),
        )
        raise
    try:
        answer: Answer | None = state.result()  # raises if the approval run failed
    except Exception as exc:  # cancelled in the UI, crashed: the trail says so, the run fails
        why = f"the approval run ended {state.name or 'unfinished'} ({exc}), taking no answer"
        best_effort(
            "record the proposal's expiry in the audit trail",
            lambda: expire(registry, version, why, actor),
        )
        raise
    if answer is None:
        tell(
            slug,
            f"mnist-retrain run {run_name}: approval of {registry.name} v{version} expired",
            f"No answer within {timeout_s} s: v{version} stays staging "
            f"(`mnist-pipeline models promote {version}` promotes it).",
        )
    if answer is not None and answer.who is None:  # the UI's form, no name given
        answer = replace(answer, who=announce.run_actor(flow_run.name or flow_run.id, "prefect-ui"))
    settled = settle(registry, version, registration.champion, answer, actor, timeout_s)
    outcome = f"approval:{settled.outcome}"  # recorded: from here on a failure is a warning
    approval_run = state.state_details.flow_run_id
    best_effort("tag the run with the approval's outcome", lambda: tag_run(outcome))
    best_effort(
        "tag the approval run with its outcome",
        lambda: tag_run(outcome, drop=waiting, run_id=approval_run),
    )
    print(settled.message)
    return settled


def _expired_at_once(registry: Registry, version: int, why: str, actor: str) -> Settled:
    """Nothing waits for an answer (`why`): the proposal is recorded as expired by `actor`, a
    warning if it cannot be (v`version` is committed and stays staging either way)."""
    settled = Settled("expired", f"{why}: v{version} stays staging")  # if not recorded

    def record() -> None:
        nonlocal settled
        settled = expire(registry, version, why, actor)

    best_effort("record the proposal's expiry in the audit trail", record)
    if flow_run.id:
        best_effort("tag the run with the approval's outcome", lambda: tag_run("approval:expired"))
    hint = f" (`mnist-pipeline models promote {version}` promotes it)"
    return replace(settled, message=settled.message + hint)


def aliases_after(registry: Registry, version: int, settled: Settled) -> str:
    """The aliases of v`version` once the approval `settled`, for the run's result; where the
    registry cannot be read (a warning: the outcome is recorded), says so."""
    found: list[str] = []

    def read() -> None:
        found.extend(registry.state().aliases_of(version))

    if best_effort(f"read v{version}'s aliases after the approval", read):
        return ", ".join(found) or "no alias"
    return f"unknown (the registry could not be read after v{version} was {settled.outcome})"


def _run_again(message: str) -> None:
    """Set the timed-out paused run running again, so it can end Completed (the server refuses
    to resume an expired pause, so the state is forced)."""
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(flow_run.id, Running(message=message), force=True)
