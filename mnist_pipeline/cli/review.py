"""`mnist-pipeline data pending|accept|reject`: the review of images awaiting it in data/pending/
(inbox/pending.py), or with `inbox.shared` in the store's queue (inbox/review_queue.py,
review_shared.py), before they enter the inbox; registered on the `data` command group."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from mnist_pipeline.cli import pending_view
from mnist_pipeline.cli.arguments import given_path
from mnist_pipeline.cli.state import console, state, user_name
from mnist_pipeline.core.atomic import no_folders
from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.core.params import Params
from mnist_pipeline.inbox import dvc_claim, pending, review_move, review_queue, review_shared, store
from mnist_pipeline.inbox import events as inbox_events
from mnist_pipeline.inbox.shared import SharedInbox, open_shared
from mnist_pipeline.inbox.store import Added


def list_pending(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON list.")] = False,
    save: Annotated[
        Path | None,
        typer.Option(
            "--save",
            metavar="DIR",
            parser=given_path,
            callback=pending_view.save_option,
            help="Write each image to DIR/<sha256>.<format> (created if need be) and list those "
            "files: with a shared inbox the images are inside the store's claims.",
        ),
    ] = None,
) -> None:
    """Images awaiting review: claimed label(s), the production model's digit ("-" without
    one), how often each was sent and by whom; `!` marks claims that disagree."""
    st = state(ctx)
    shared = _shared_queue(ctx)
    read = None if shared is None else review_queue.queue(shared)
    found = pending.items(st.layout.pending) if read is None else read.found
    images = {} if read is None else read.images
    predicted = pending_view.predictions(st.params(), st.layout, found, images)
    for key, why in ({} if read is None else read.problems).items():
        console.print(f"warning: skipped {key}: {why}; delete it there", markup=False)
    if save is not None:
        found = pending_view.saved(found, images, pending_view.view_folder(save, st.layout, shared))
    elif read is not None and found:
        console.print(
            "the images are inside the store's claims: `data pending --save DIR` writes them to "
            "a folder here to look at",
            markup=False,
        )
    if as_json:
        print(json.dumps([{**i.to_dict(), "predicted": predicted.get(i.sha256)} for i in found]))
        return
    for item in found:
        claimed = "/".join(str(label) for label in item.labels)
        sources = ",".join(sorted({c.source for c in item.claims}))
        mark = "!" if item.conflict else " "
        seen = predicted.get(item.sha256)
        print(
            f"{item.sha256[:12]}  claimed {claimed}{mark} model {'-' if seen is None else seen}"
            f"  x{len(item.claims)}  {sources}  {item.path}"
        )
    conflicts, duplicates = sum(i.conflict for i in found), sum(i.duplicate for i in found)
    console.print(
        f"{len(found)} pending image(s); {duplicates} sent more than once, {conflicts} with "
        "conflicting labels",
        markup=False,
    )


def _shared_queue(ctx: typer.Context) -> SharedInbox | None:
    """The store's review queue when `inbox.shared` is set, with this host's earlier
    quarantine moved into it first (None: the queue is data/pending/)."""
    st = state(ctx)
    shared = open_shared(st.params().inbox.shared, st.layout)
    if shared is not None:
        moved, stayed = review_move.move_local(shared, st.layout.pending, st.layout.inbox)
        for why in stayed:
            console.print(f"warning: {why}", markup=False)
        if moved:
            console.print(
                f"moved {moved} image(s) from {st.layout.pending} to the review queue in "
                f"{shared.location}",
                markup=False,
            )
    return shared


def accept(
    ctx: typer.Context,
    refs: Annotated[
        list[str], typer.Argument(metavar="SHA...", help="SHA-256 prefixes (8+ digits).")
    ],
    label: Annotated[
        int | None,
        typer.Option(
            "--label",
            "-l",
            min=0,
            max=9,
            metavar="DIGIT",
            help="The label to store it under (one image only).",
            show_default="the one claimed",
        ),
    ] = None,
) -> None:
    """Move pending images into the inbox (data/extra/<digit>/), where training reads them."""
    if label is not None and len(refs) > 1:  # a usage error: exit 2
        raise typer.BadParameter(
            f"relabels one image; accept these {len(refs)} one at a time to relabel them",
            param_hint="--label",
        )
    layout, params = state(ctx).layout, state(ctx).params()
    shared = _shared_queue(ctx)
    done: list[Added] = []

    def accepted(added: Added) -> None:
        known = "already in the inbox" if shared is None else "already in the shared inbox"
        line = f"{'accepted' if added.new else f'accepted ({known})'}: {added.entry.path}"
        line += "" if added.here else ", once `data sync` brings it here"
        console.print(f"{line} (label {added.entry.label})", markup=False)
        done.append(added)

    with (
        dvc_claim.changing_inbox(layout.project, layout.inbox),  # not during `dvc repro`
        counting(layout.inbox, done, params, shared),  # the retraining trigger
    ):
        if shared is None:
            pending.accept(layout.pending, layout.inbox, refs, user_name(), label, accepted)
        else:  # each image is told as it is accepted: a failure may stop the rest
            review_shared.accept(shared, layout.inbox, refs, user_name(), label, accepted)
            console.print(f"shared: {len(done)} image(s) in {shared.location}", markup=False)


@contextlib.contextmanager
def counting(
    folder: Path, added: list[Added], params: Params, shared: SharedInbox | None
) -> Iterator[None]:
    """Around a command that fills `added`: its new images counted for the retraining trigger
    when it ends; when it fails, those it stored before the failure too, and the failure is the
    error raised (never one of the count's). A folder where this host's count belongs is
    refused before any image is stored (after, the images would be in and the command failed)."""
    if shared is None:
        no_folders(inbox_events.pending_file(folder))
    try:
        yield
    except Exception:
        with contextlib.suppress(Exception):
            note_added(folder, added, params, shared)
        raise
    note_added(folder, added, params, shared)


def note_added(
    folder: Path, added: list[Added], params: Params, shared: SharedInbox | None
) -> None:
    """Count the new images for the retraining trigger, and say when it fired (inbox_events)."""
    if not any(done.new for done in added):
        return
    found = store.entries(folder)
    told = inbox_events.note_added(
        folder,
        sum(done.new for done in added),
        {"images": len(found), "inbox_sha256": store.inbox_sha256(found)},
        params.schedule.min_new_images,
        params.registry.model_name,
        None if shared is None else shared.count_pending,
    )
    if told:
        console.print(told, markup=False)


def reject(
    ctx: typer.Context,
    refs: Annotated[
        list[str], typer.Argument(metavar="SHA...", help="SHA-256 prefixes (8+ digits).")
    ],
) -> None:
    """Delete pending images: they never reach the inbox."""
    layout = state(ctx).layout
    shared = _shared_queue(ctx)
    if shared is None:
        rejected = pending.reject(layout.pending, layout.inbox, refs, user_name())
    else:
        rejected = review_shared.reject(shared, layout.inbox, refs, user_name())
    for item in rejected:
        console.print(f"rejected: {item.sha256} (claimed {item.labels})", markup=False)
    for item in rejected:  # the rejects are done: a failure to look is a warning
        try:
            label = _in_inbox(item.sha256, layout.inbox, shared)
        except (PipelineError, OSError) as exc:
            console.print(
                f"warning: could not check whether {item.sha256[:12]} is in the inbox: {exc}",
                markup=False,
            )
            continue
        if label is not None:
            console.print(
                f"warning: {item.sha256[:12]} is in the inbox labelled {label}, so it still "
                f"trains: `mnist-pipeline data remove {item.sha256[:12]}` takes it out",
                markup=False,
            )


def _in_inbox(sha256: str, inbox: Path, shared: SharedInbox | None) -> int | None:
    """The label of a rejected image the inbox (or the shared inbox) holds all the same (added
    with `data add`, or by an accept that was cut short): a reject removes claims, not the
    inbox's copy. By the name `add` gives it: hashing the whole inbox per image would cost."""
    there = store.find_named(inbox, sha256)
    if there is not None:
        return there.label
    record = shared.readable_record(sha256) if shared is not None else None
    return None if record is None else record.label
