"""The retraining flow's approval step: pause until a person approves the proposed version.

When register held a version back for approval (`registry.approval: required`), the run is
tagged `awaiting-approval:<model>:v<N>` and paused with `pause_flow_run(wait_for_input=
ApprovalInput)`: the Prefect UI shows a Resume form (approve, comment, who), and `mnist-pipeline
models approve|reject N` answers it through the API. The outcome is recorded in the registry
(mnist_pipeline/pipeline/approval.py) and tagged `approval:<outcome>`. A run nobody answers
within `registry.approval_timeout_s` is set running again (Prefect would otherwise fail it) and
ends Completed, the version staging.
"""

from __future__ import annotations

from prefect.client.orchestration import get_client
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.runtime import flow_run
from prefect.states import Running

from flows.artifacts import tag_run
from mnist_pipeline.pipeline import announce
from mnist_pipeline.pipeline.approval import Answer, Settled, settle, waiting_tag
from mnist_pipeline.registry import Registration, Registry

POLL_S = 10  # how often a paused run checks whether it was answered


class ApprovalInput(RunInput):
    """The answer a paused retraining run waits for."""

    approve: bool
    comment: str = ""
    who: str | None = None  # recorded as the actor; empty: the flow run


def await_approval(registry: Registry, registration: Registration, timeout_s: int) -> Settled:
    """Pause the current flow run until the proposal of `registration`'s version for
    production is answered or `timeout_s` pass; record and return the outcome."""
    version, actor = registration.version, announce.current_actor()
    if not flow_run.id:  # e.g. retrain.fn(): no run to pause, nothing recorded
        return Settled(
            "expired",
            f"not in a flow run: nobody can approve v{version} here; it stays staging "
            f"(`mnist-pipeline models promote {version}` promotes it)",
        )
    tag = waiting_tag(registry.name, version)
    tag_run(tag)
    print(
        f"v{version} awaits approval for production: Resume this run in the Prefect UI, or "
        f"`mnist-pipeline models approve {version} --comment TEXT` (or reject)"
    )
    try:
        given = pause_flow_run(
            wait_for_input=ApprovalInput, timeout=timeout_s, poll_interval=min(POLL_S, timeout_s)
        )
        answer = Answer(given.approve, given.comment, given.who or None)
    except FlowPauseTimeout:
        _run_again("no answer to the approval in time")
        answer = None
    settled = settle(registry, version, registration.champion, answer, actor, timeout_s)
    tag_run(f"approval:{settled.outcome}", drop=(tag,))
    print(settled.message)
    return settled


def _run_again(message: str) -> None:
    """Set the timed-out paused run running again, so the flow can record the outcome and end
    Completed (the server refuses to resume an expired pause, so the state is forced)."""
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(flow_run.id, Running(message=message), force=True)
