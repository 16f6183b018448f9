"""Notifications: a flow-run state hook (failed, crashed or cancelled) that tells a Prefect
notification block, the word a run started by an event (drift, new labelled digits) sends when
it starts, and `tell` for the rest (a version waiting for approval, an approval that expired).

The block is any of Prefect's notification blocks (custom webhook, Slack, Teams, ...), created
once on the server and named by the `notify_block` flow parameter ("block-type/block-name",
`schedule.notify_block` in params.yaml). A notifier that is down never changes the run's outcome:
the failure to notify is logged.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from prefect.blocks.core import Block
from prefect.exceptions import MissingContextError
from prefect.logging.loggers import flow_run_logger, get_run_logger

from mnist_pipeline.core.service_params import BLOCK_SLUG

logger = logging.getLogger("mnist_pipeline.notify")


def failure_message(flow_run_name: str, state: Any) -> tuple[str, str]:
    """(subject, body) of the notification for a failed, crashed or cancelled run."""
    if state.is_crashed():
        ended = "crashed"
    elif state.is_cancelling() or state.is_cancelled():
        ended = "cancelled"
    else:
        ended = "failed"
    return f"mnist-retrain run {flow_run_name} {ended}", state.message or "no message"


def notify_failure(flow: Any, flow_run: Any, state: Any) -> None:
    """on_failure/on_crashed/on_cancellation hook: one notification through the configured
    block, if any."""
    slug = (flow_run.parameters or {}).get("notify_block")
    if not slug:
        return
    subject, body = failure_message(flow_run.name, state)
    run_logger = flow_run_logger(flow_run, flow)  # shown in the run's logs in the UI
    try:
        Block.load(slug).notify(body=body, subject=subject)
    except Exception as exc:  # a notifier's failure must not change the run's outcome
        for log in (logger, run_logger):
            log.error("could not notify %s about run %s: %s", slug, flow_run.name, exc)
    else:
        run_logger.info("notified %s: %s", slug, subject)


def tell(slug: str | None, subject: str, body: str) -> None:
    """Send (subject, body) through the block `slug`, if any; a failure is logged, not raised."""
    if not slug:
        return
    try:
        Block.load(slug).notify(body=body, subject=subject)
    except Exception as exc:  # a notifier's failure must not change the run's outcome
        for log in (logger, *_run_logger()):
            log.error("could not notify %s (%s): %s", slug, subject, exc)


def _run_logger() -> list[Any]:
    """The current flow run's logger (shown in the UI), if in one."""
    try:
        return [get_run_logger()]
    except MissingContextError:
        return []


def notify_started(slug: str | None, flow_run_name: str, reason: str) -> None:
    """Tell the block `slug` (if any) that a run started and why; a failure is logged."""
    tell(slug, f"mnist-retrain run {flow_run_name} started", f"started because: {reason}")


def check_block(slug: str | None) -> bool:
    """At a run's start: log an error now, in the run's log, if the block `slug` cannot be
    loaded (a typo, a deleted block) or is no notification block, rather than only when a
    failure would need it. True when it loads and can notify."""
    if not slug:
        return False
    try:
        if not re.fullmatch(BLOCK_SLUG, slug):  # Prefect's own error: a failed tuple unpacking
            raise ValueError(
                "not of the form block-type/block-name, in lowercase letters, digits and dashes"
            )
        block = Block.load(slug)
        if not callable(getattr(block, "notify", None)):  # a Secret, a JSON block, ...
            raise TypeError(f"a {type(block).__name__} block, not a notification block")
    except Exception as exc:  # not found, a slug without "type/name", a server that refused
        why = " ".join(str(exc).split())[:200]
        for log in (logger, *_run_logger()):  # in a flow run: shown in the UI too
            log.error(
                "notify_block %s cannot be used (%s): a failure of this run would notify no one",
                slug,
                why,
            )
        return False
    return True
