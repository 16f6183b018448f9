"""New labelled digits start a retraining: `data add` and `data accept` tell a Prefect server
when enough arrived.

Every `data add` (and `data accept`) counts the images it stored as pending, in
data/.extra.pending.json (beside the inbox, so DVC does not hash it); ingest, which reads them
for training, takes away the count it read once its outputs are written (a failed ingest
leaves it).
With a Prefect server configured (`PREFECT_API_URL`) and at least `schedule.min_new_images`
pending, `data add` emits one event, `mnist-pipeline.inbox.changed`, on the resource
`mnist-pipeline.inbox.<model name>`, with the pending count, the inbox's size and its content
fingerprint, and sets pending back to 0. The deployment `python -m flows.serve` creates carries
a trigger for that event (`inbox_trigger`), so each event starts one retraining run; a server
that cannot be reached leaves the count pending for the next `data add`. With a shared inbox
(`inbox.shared`) the count is the store's, so digits added on several hosts add up to one event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mnist_pipeline.core import json_text
from mnist_pipeline.core.atomic import write_json
from mnist_pipeline.core.errors import DataError, PipelineError
from mnist_pipeline.core.regular_file import read_regular
from mnist_pipeline.inbox.store import lock

# A pending count: (new, claim_at) -> (count, claimed). Adds `new`; with `claim_at` and a count
# of at least that many, claims the count (sets it to 0). This host's file (`count_here`) or the
# shared inbox's store (shared.SharedInbox.count_pending).
PendingCount = Callable[[int, int | None], tuple[int, bool]]

EVENT = "mnist-pipeline.inbox.changed"
RESOURCE_PREFIX = "mnist-pipeline.inbox."
INBOX_REASON = "{{ event.payload.new_images }} new labelled digit(s) in the inbox"


def pending_file(inbox: Path) -> Path:
    return inbox.parent / f".{inbox.name}.pending.json"


def read_pending(inbox: Path) -> int:
    """Images added since the last event (0 when none was recorded or the file is unreadable)."""
    return read_count(inbox)[0]


def read_count(inbox: Path) -> tuple[int, int]:
    """(images added since the last event, events sent so far): the generation tells a reader
    whether an event reset the count since it looked (0s when unrecorded or unreadable)."""
    try:
        found = json_text.loads(read_regular(pending_file(inbox)))
        pending, generation = found.get("pending", 0), found.get("generation", 0)
    except (OSError, ValueError, AttributeError):
        return 0, 0

    def counted(value: object) -> int:
        return value if isinstance(value, int) and value >= 0 else 0

    return counted(pending), counted(generation)


def server_configured() -> str | None:
    """The Prefect API URL of the current settings (environment, then the active profile), the
    one the events client sends to; None when there is none. PipelineError, naming the setting,
    when Prefect refuses its settings (a PREFECT_* variable it cannot read)."""
    from prefect.settings import PREFECT_API_URL  # a second or so to import

    try:
        return PREFECT_API_URL.value() or None
    except ValueError as exc:  # pydantic's ValidationError
        why = "; ".join(line.strip() for line in str(exc).splitlines()[:3])
        raise PipelineError(f"Prefect's settings are refused: {why}") from None


def resource_id(model_name: str) -> str:
    return RESOURCE_PREFIX + model_name


async def _emit(event: str, resource: dict[str, str], payload: dict[str, Any]) -> None:
    from prefect.events import Event
    from prefect.events.clients import get_events_client

    async with get_events_client() as client:  # sent before the block ends, not at exit
        await client.emit(Event(event=event, resource=resource, payload=payload))


def write_pending(inbox: Path, pending: int, generation: int = 0) -> None:
    """Record `pending` and the events' `generation` (the caller holds the inbox's lock)."""
    write_json(pending_file(inbox), {"pending": pending, "generation": generation})


def take_pending(inbox: Path, taken: int, generation: int) -> None:
    """Ingest used the `taken` images counted pending when it read the inbox at `generation`:
    what `data add` counted since stays pending. An event since then reset the count, and what
    it counts now was added after ingest read the inbox: it is left as it is."""
    with lock(inbox):
        pending, now = read_count(inbox)
        if now == generation:
            write_pending(inbox, max(0, pending - taken), now)


def count_here(inbox: Path) -> PendingCount:
    """This host's pending count, in its file, under the inbox's lock."""

    def count(new: int, claim_at: int | None) -> tuple[int, bool]:
        with lock(inbox):
            pending, generation = read_count(inbox)
            pending += new
            claimed = claim_at is not None and pending >= claim_at
            if claimed:  # the event takes them: a new generation starts at 0
                write_pending(inbox, 0, generation + 1)
            else:
                write_pending(inbox, pending, generation)
        return pending, claimed

    return count


def note_added(
    inbox: Path,
    new: int,
    payload: dict[str, Any],
    min_new: int,
    model_name: str,
    shared: PendingCount | None = None,
) -> str | None:
    """Count `new` stored images as pending and emit the event when enough are; returns a line
    for the user about what happened (None: nothing to say).

    The pending count is claimed before the event is sent, so two `data add`s at once cannot
    both send it; a failed send gives the count back. Kept in this host's file, where ingest
    sets it to 0 (the images it read are being trained on); with a shared inbox (`shared`: its
    count_pending), in the store by compare-and-swap, counting every host's images, and set to
    0 only by the event (a scheduled run does not reset it).
    """
    if not new:
        return None  # nothing to count
    count = count_here(inbox) if shared is None else shared
    try:
        url = server_configured()
    except PipelineError as exc:  # a PREFECT_* setting Prefect refuses: the images are stored
        return f"warning: {new} new image(s) not counted for the retraining trigger: {exc}"
    try:
        pending, claimed = count(new, min_new if url is not None else None)
    except DataError as exc:  # a shared store that went away after taking the images
        return f"warning: {new} new image(s) not counted for the retraining trigger: {exc}"
    if not claimed:
        return None  # too few, or no server: the weekly schedule (or a manual run) uses them
    body = {**payload, "new_images": pending}
    try:
        asyncio.run(_emit(EVENT, {"prefect.resource.id": resource_id(model_name)}, body))
    except Exception as exc:  # a server that is down must not fail `data add`
        try:  # give the claim back (with what others counted meanwhile)
            count(pending, None)
            kept = f"{pending} pending"
        except DataError as lost:
            kept = f"and could not count {pending} image(s) as pending again ({lost})"
        return f"warning: could not tell the Prefect server at {url} ({exc}); {kept}"
    return f"{pending} new image(s): told the Prefect server at {url} ({EVENT})"


def inbox_trigger(model_name: str) -> Any:
    """The deployment trigger: one retraining run per inbox event of this model's project."""
    from prefect.events import DeploymentEventTrigger

    return DeploymentEventTrigger(
        name=f"new labelled digits for {model_name}",
        expect={EVENT},
        match={"prefect.resource.id": resource_id(model_name)},
        parameters={"reason": INBOX_REASON},  # the run says why it started
    )
