"""A person approves a version before it becomes production (`registry.approval: required`).

With approval required, register_candidate registers a version the promotion rules would make
production as staging, proposed for production (promotion.held_for_approval). The retraining
flow then waits in its `approval` subflow, whose run pauses tagged
`awaiting-approval:<model>:v<N>` and `...:v<N>:<card>` (flows/approval.py; `<card>`: the
start of vN's card seal), until someone answers from the Prefect UI or with `mnist-pipeline
models approve|reject N` (`resume_waiting`), or `registry.approval_timeout_s` pass. `settle`
records the outcome in the audit trail:

- approved: production moves to vN (action "promote"), by the approver, the comment as why;
  but if production moved since vN was compared with it, that comparison no longer holds: vN
  stays staging and a "reject" event says so (compare again, or `models promote N`); if vN
  itself no longer passes the promotion checks (a damaged file, a card sealed again), it stays
  staging and a "reject" event by the run names the approver and why (outcome "refused");
- rejected: vN stays staging; a "reject" event (production not moved) with the comment;
- no answer in time: vN stays staging; an "expire" event.

Where vN no longer is staging by then (a newer version took staging, or vN was promoted by
hand), the events that move nothing say where it is instead; an approval of a vN promoted by
hand records an "approve" event (nothing moves) with the approver and the comment.

Prefect is imported only to answer a paused run (the registry and this module's logic do not
need it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.inbox.events import server_configured
from mnist_pipeline.pipeline import announce
from mnist_pipeline.pipeline.register import require_promotable
from mnist_pipeline.registry import PRODUCTION, SEAL_KEY, Registry
from mnist_pipeline.registry.aliases import MAX_COMMENT, STAGING, check_text, checked_actor
from mnist_pipeline.registry.registration import AliasMoved, NotPromotable

Outcome = Literal["approved", "rejected", "expired", "outdated", "refused"]


def waiting_tag(model_name: str, version: int, card_sha256: str | None = None) -> str:
    """The tag of a flow run waiting for approval of `model_name` v`version`; with the seal
    `card_sha256` of that version's card, the tag naming the very version, so that another
    registry's vN of the same model name (another project on the same Prefect server) is never
    answered by mistake. A waiting run carries both."""
    plain = f"awaiting-approval:{model_name}:v{version}"
    return plain if card_sha256 is None else f"{plain}:{card_sha256[:16]}"


def version_tags(registry: Registry, version: int) -> tuple[str, str]:
    """The two `waiting_tag`s of `registry`'s v`version` (its card read and checked)."""
    seal = registry.card(version)[SEAL_KEY]
    return waiting_tag(registry.name, version), waiting_tag(registry.name, version, seal)


@dataclass(frozen=True)
class Answer:
    """A person's answer to a paused run: approve or not, why, and who (self-asserted, as
    the answer names it; None: the waiting run)."""

    approve: bool
    comment: str = ""
    who: str | None = None

    def __post_init__(self) -> None:
        """Refused before any run is answered: text the audit trail would refuse."""
        check_text(self.comment, "comment", MAX_COMMENT)
        if self.who is not None:  # "" and "  " too: the run would fail recording it once resumed
            checked_actor(self.who)

    def run_input(self) -> dict[str, Any]:
        """The answer as the paused run's input (flows/approval.py ApprovalInput)."""
        return {"approve": self.approve, "comment": self.comment, "who": self.who}


@dataclass(frozen=True)
class Settled:
    """How an approval ended, and a line saying so."""

    outcome: Outcome
    message: str


def _v(version: int | None) -> str:
    return "nothing" if version is None else f"v{version}"


def _left(registry: Registry, version: int) -> str | None:
    """None when an answer that moves nothing leaves vN staging; else a line saying where it
    is: production (promoted by hand while it waited, which an answer to the stale proposal
    does not undo), or no longer staging (a newer version took staging meanwhile)."""
    aliases = registry.aliases()
    if aliases.get(PRODUCTION) == version:
        return f"v{version} is production already (promoted meanwhile), nothing moved"
    if aliases.get(STAGING) == version:
        return None
    held = ", ".join(sorted(alias for alias, at in aliases.items() if at == version))
    return (
        f"v{version} {f'stays {held}' if held else 'keeps no alias'} (staging moved to "
        f"{_v(aliases.get(STAGING))} meanwhile), nothing moved"
    )


def expire(registry: Registry, version: int, why: str, run_actor: str) -> Settled:
    """Record that the proposal of `version` for production went unanswered (`why`): an
    "expire" event by the run; vN stays staging."""
    production = _left(registry, version)
    registry.note(
        version, PRODUCTION, "expire", f"{why}: {production or 'kept as staging'}", run_actor
    )
    return Settled("expired", f"{why}: {production or f'v{version} stays staging'}")


def settle(
    registry: Registry,
    version: int,
    champion: int | None,
    answer: Answer | None,
    run_actor: str,
    timeout_s: int,
) -> Settled:
    """Record the answer (None: none came within `timeout_s`) to the proposal that `version`,
    compared with production v`champion`, replace it; `run_actor` is the waiting run."""
    if answer is None:
        why = f"no answer within {timeout_s} s to the proposal of v{version} for production"
        return expire(registry, version, why, run_actor)
    actor, comment = answer.who or run_actor, answer.comment or None
    said = f" ({answer.comment})" if answer.comment else ""
    if not answer.approve:
        production = _left(registry, version)
        why = f"{actor} rejected v{version} for production: {production or 'kept as staging'}"
        registry.note(version, PRODUCTION, "reject", why, actor, comment)
        return Settled("rejected", f"{why}{said}")
    try:
        rule = require_promotable(registry)  # a card sealed again since it was proposed
        previous = registry.promote(version, PRODUCTION, actor, comment, champion, rule)
    except AliasMoved as moved:
        if moved.now == version:  # by hand meanwhile: the approver's word is recorded all the same
            why = f"{actor} approved v{version}: it is production already (promoted meanwhile)"
            registry.note(version, PRODUCTION, "approve", why, actor, comment)
            return Settled("approved", f"{why}{said}")
        why = (
            f"{actor} approved v{version}, but production moved from {_v(champion)} to "
            f"{_v(moved.now)} since v{version} was compared with it: "
            f"{_left(registry, version) or 'kept as staging'} "
            f"(compare again, or `mnist-pipeline models promote {version}`)"
        )
        registry.note(version, PRODUCTION, "reject", why, run_actor, comment)
        return Settled("outdated", why)
    except NotPromotable as refused:  # vN itself no longer passes (damaged, sealed again)
        left = _left(registry, version) or "kept as staging"
        why = f"{actor} approved v{version}, but it cannot be promoted ({refused}): {left}"
        registry.note(version, PRODUCTION, "reject", why, run_actor, comment)
        return Settled("refused", why)
    announce.moved(registry, PRODUCTION, version, previous, actor)
    return Settled(
        "approved", f"{actor} approved v{version}: production {_v(previous)} -> v{version}{said}"
    )


def resume_waiting(registry: Registry, version: int, answer: Answer) -> str:
    """Answer the paused flow run waiting for approval of `registry`'s v`version` (through the
    configured Prefect API); returns a line naming it. PipelineError when there is no API, no
    such run, more than one, or the run refuses the answer."""
    url = server_configured()
    if url is None:
        raise PipelineError(
            "no Prefect API configured (set PREFECT_API_URL): approvals answer a paused flow run"
        )
    model_name, (plain, tag) = registry.name, version_tags(registry, version)
    try:
        found = _paused_runs(tag)  # this registry's vN: the other tag is shared
        waiting = [] if found else _paused_runs(plain)
    except Exception as exc:  # unreachable server, refused request
        raise PipelineError(f"cannot read flow runs from the Prefect API at {url}: {exc}") from None
    if waiting:  # another project's vN, or this card sealed again since
        names = ", ".join(f"{run.name} ({run.id})" for run, _ in waiting)
        raise PipelineError(
            f"flow run {names} waits for approval of a {model_name} v{version} whose card is "
            f"not this registry's v{version} (tag {tag}): another project's with the same "
            "model name, or this card was sealed again since; nothing moved (if it is this "
            "project's run, answer it in the Prefect UI)"
        )
    runs = [run for run, parent in found if parent is None or not parent.state.is_final()]
    if found and not runs:  # its retraining run crashed or was cancelled while it waited
        run, parent = found[0]
        raise PipelineError(
            f"flow run {run.name} waited for approval of {model_name} v{version} for flow run "
            f"{parent.name}, which ended {parent.state.name}: no one would act on the answer, "
            f"so nothing moved; `mnist-pipeline models promote {version}` moves production "
            "by hand"
        )
    if not runs:
        raise PipelineError(
            f"no paused flow run is waiting for approval of {model_name} v{version} "
            f"(tag {tag}); nothing moved"
        )
    if len(runs) > 1:
        names = ", ".join(f"{run.name} ({run.id})" for run in runs)
        raise PipelineError(f"{len(runs)} flow runs wait for approval of v{version}: {names}")
    run = runs[0]
    try:
        status, reason = _resume(run.id, answer.run_input())
    except Exception as exc:  # unreachable server, refused request
        raise PipelineError(f"flow run {run.name} ({run.id}) could not be resumed: {exc}") from None
    if status != "ACCEPT":  # another answer or the timeout came first: this one was dropped
        raise PipelineError(
            f"flow run {run.name} ({run.id}) was not resumed (the server said {status}: "
            f"{reason}): this answer was not taken; `mnist-pipeline models history` shows "
            "what was decided"
        )
    verb = "approve" if answer.approve else "reject"
    return f"resumed flow run {run.name} ({run.id}) to {verb} v{version}"


def _resume(run_id: Any, run_input: dict[str, Any]) -> tuple[str, str]:
    """Resume the paused run `run_id` with `run_input`: the server's answer (ACCEPT, REJECT or
    ABORT) and its reason. Prefect's own `resume_flow_run` raises only on REJECT; a run no
    longer paused (answered or expired since it was read) is an ABORT it passes over."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        result = client.resume_flow_run(run_id, run_input=run_input)
    reason = getattr(result.details, "reason", None) or "no reason given"
    return result.status.value, reason


def _paused_runs(tag: str) -> list[tuple[Any, Any]]:
    """The paused flow runs tagged `tag`, each with the flow run that started it as a subflow
    (None: none, or one without a state)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.exceptions import ObjectNotFound

    only = FlowRunFilter(
        tags=FlowRunFilterTags(all_=[tag]),
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])),
    )
    with get_client(sync_client=True) as client:
        found = []
        for run in client.read_flow_runs(flow_run_filter=only, limit=10):
            parent = None
            if run.parent_task_run_id is not None:
                try:
                    task_run = client.read_task_run(run.parent_task_run_id)
                    if task_run.flow_run_id is not None:
                        parent = client.read_flow_run(task_run.flow_run_id)
                except ObjectNotFound:  # deleted meanwhile: as if it had none
                    parent = None
            found.append((run, parent if parent is not None and parent.state else None))
        return found
