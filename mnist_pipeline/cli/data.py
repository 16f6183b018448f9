"""`mnist-pipeline data add|list|remove|pending|accept|reject|init|sync`: the inbox of labelled
digits (inbox/store.py), the images awaiting review before they enter it (inbox/pending.py; the
review commands are in cli/review.py), and the inbox shared with other hosts through object
storage (inbox/shared.py, inbox/shared_edits.py, inbox/sync.py)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from mnist_pipeline.cli import review
from mnist_pipeline.cli.arguments import given_path
from mnist_pipeline.cli.state import console, state, user_name
from mnist_pipeline.core.errors import DataError
from mnist_pipeline.core.text import printable
from mnist_pipeline.inbox import (
    dvc_claim,
    lookup,
    pending,
    review_queue,
    shared_edits,
    sync,
    tracked,
)
from mnist_pipeline.inbox import store as inbox
from mnist_pipeline.inbox.drawings import Drawings
from mnist_pipeline.inbox.seen import check_not_lost
from mnist_pipeline.inbox.shared import SharedInbox, StoreUnavailable, open_shared

SAME_DRAWING = "remove the other first, or add this one with its label; it was not added"

data_app = typer.Typer(
    help="Labelled digits users add (data/extra/<digit>/), and those awaiting review "
    "(data/pending/): add, list, remove, pending, accept, reject, init, sync.",
    no_args_is_help=True,
)


@data_app.command("add")
def add(
    ctx: typer.Context,
    images: Annotated[
        list[Path],
        typer.Argument(
            metavar="IMAGE...", parser=given_path, help="Image files (any format predict reads)."
        ),
    ],
    label: Annotated[
        int,
        typer.Option(
            "--label", "-l", min=0, max=9, metavar="DIGIT", help="The digit they show, 0-9."
        ),
    ],
    for_review: Annotated[
        bool,
        typer.Option(
            "--pending",
            help="Quarantine them for review (data/pending/, or the shared inbox's queue).",
        ),
    ] = False,
) -> None:
    """Store images under their label (the same image twice is stored once); with a Prefect
    server configured, enough new ones start a retraining run (schedule.min_new_images).
    With --pending they await `data accept` instead, claimed by cli:<your user name>."""
    params = state(ctx).params()  # before storing anything: bad params change nothing
    folder = state(ctx).layout.inbox
    shared = open_shared(params.inbox.shared, state(ctx).layout)  # a bad location: nothing stored
    inbox.check_label(label)
    if for_review:
        _add_pending(folder, state(ctx).layout.pending, images, label, shared)
        return
    added: list[inbox.Added] = []
    with (
        dvc_claim.changing_inbox(state(ctx).layout.project, folder),  # not during `dvc repro`
        review.counting(folder, added, params, shared),  # those stored before a bad file too
    ):
        try:
            _add_all(folder, images, label, shared, added)
        finally:  # a bad file stops the command; the images stored before it are told
            for done in added:
                known = "already in the inbox" if shared is None else "already in the shared inbox"
                what = "added" if done.new else known
                line = f"{what}: {done.entry.path} (label {done.entry.label})"
                console.print(line, markup=False)
            if shared is not None and added:
                stored = len({done.entry.sha256 for done in added})  # a file named twice: once
                console.print(f"shared: {stored} image(s) in {shared.location}", markup=False)


def _add_all(
    folder: Path, images: list[Path], label: int, shared: SharedInbox | None, added: list
) -> None:
    """Store each image (`added` hears each; a bad one stops the command), each under the
    inbox's lock, every inbox file hashed once for all of them (store.Listing)."""
    listed = inbox.Listing(folder)
    known = Drawings(folder, listed.entries())  # a copy of one labelled otherwise: refused
    for index, path in enumerate(images):
        with _stops_at(images, index):
            data = inbox.read_file(path)
            known.check(data, str(path), label, SAME_DRAWING)
            if shared is None:
                done = inbox.add(folder, data, str(path), label, listed=listed)
            else:  # the store first: one it cannot take is not stored here either
                source = f"cli:{user_name()}"
                done = shared_edits.add(shared, folder, data, str(path), label, source, listed)
            added.append(done)


def _add_pending(
    folder: Path, quarantine: Path, images: list[Path], label: int, shared: SharedInbox | None
) -> None:
    """Quarantine each image, in data/pending/ or the shared inbox's review queue (a bad one
    stops the command; those before it stay pending), and warn of one the inbox already holds
    under another label (`data accept` would refuse it)."""
    source = f"cli:{user_name()}"
    stored = {entry.sha256: entry for entry in inbox.entries(folder)}
    if shared is not None:  # claims written to a wiped store or an unmounted share are lost
        check_not_lost(shared, folder, "submitted")
    for index, path in enumerate(images):
        with _stops_at(images, index):
            data = inbox.read_file(path)
            if shared is None:
                done = pending.submit(quarantine, folder, data, str(path), label, source)
            else:
                done = review_queue.submit(shared, data, str(path), label, source)
        what = {"pending": "pending review", "known": "already pending"}
        line = f"{what[done.status]}: {shown(path)} {done.sha256[:12]} (label {label})"
        console.print(line, markup=False)
        there = stored.get(done.sha256)
        if there is not None and there.label != label:
            console.print(
                f"warning: {shown(path)} is in the inbox labelled {there.label} ({there.path}); "
                f"accepting it as {label} needs `data remove` first",
                markup=False,
            )
            continue
        try:  # the claim is stored: this check only warns, whatever the store's record is
            record = None if shared is None else shared.readable_record(done.sha256)
        except StoreUnavailable as exc:
            console.print(
                f"warning: {shown(path)}: its label in the shared inbox unknown: {exc}",
                markup=False,
            )
            record = None
        if record is not None and record.label != label:
            console.print(
                f"warning: {shown(path)} is in the shared inbox {shared.location} labelled "
                f"{record.label}; accepting it as {label} needs `data sync` and `data remove "
                f"{done.sha256[:12]}` first",
                markup=False,
            )


@contextlib.contextmanager
def _stops_at(images: list[Path], index: int) -> Iterator[None]:
    """Around the handling of images[index]: when it fails, name the images after it, which the
    command leaves alone (the error itself is printed last)."""
    try:
        yield
    except Exception:
        rest = images[index + 1 :]
        if rest:
            names = ", ".join(shown(path) for path in rest)
            line = f"stopped at {shown(images[index])}, so not added: {names}"
            console.print(line, markup=False)
        raise


@data_app.command("list")
def list_entries(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON list.")] = False,
) -> None:
    """Every labelled image in the inbox (files are not decoded here: `mnist-pipeline ingest`
    names any it refuses); on stderr, the count per digit and any files outside the digit
    folders."""
    layout = state(ctx).layout
    tracked.check_inbox(layout.project, layout.inbox)  # not a folder, or not pulled: not "0"
    listed, misplaced = inbox.listing(layout.inbox)
    found = inbox.hashed(listed)
    if misplaced:  # ingest refuses them: never silently left out of the listing
        names = ", ".join(shown(path) for path in misplaced)
        console.print(
            f"warning: {len(misplaced)} file(s) outside the digit folders "
            f"({layout.inbox}/<digit>/<file>) or not regular files, which ingest refuses: {names}",
            markup=False,
        )
    if as_json:
        print(json.dumps([entry.to_dict() for entry in found]))
        return
    for entry in found:
        print(f"{entry.label}  {entry.sha256[:12]}  {shown(entry.path)}")
    counts = [sum(e.label == d for e in found) for d in range(10)]
    console.print(
        f"{len(found)} image(s); per digit: " + " ".join(f"{d}:{n}" for d, n in enumerate(counts)),
        markup=False,
    )


@data_app.command("remove")
def remove(
    ctx: typer.Context,
    refs: Annotated[
        list[str],
        typer.Argument(
            metavar="SHA|PATH...",
            help="SHA-256 prefixes (8+ digits), or paths of the images or of copies of them.",
        ),
    ],
) -> None:
    """Retract images from the inbox (named by SHA-256 prefix, their path there, or a copy)."""
    layout = state(ctx).layout
    shared = open_shared(state(ctx).params().inbox.shared, layout)

    def told(entries: list[inbox.Entry], kept: bool = False) -> None:
        for entry in entries:
            console.print(f"removed: {entry.path} (label {entry.label})", markup=False)
        if kept and shared is not None:
            console.print(
                f"warning: {entries[0].sha256[:12]} stays in the shared inbox {shared.location}: "
                "labelled or added again elsewhere meanwhile; the next sync brings it back",
                markup=False,
            )

    with dvc_claim.changing_inbox(layout.project, layout.inbox):  # not during `dvc repro`
        if shared is None:
            told(lookup.remove(layout.inbox, refs))
        else:  # each from the store first: one it cannot retract is not removed here either
            shared_edits.remove(shared, layout.inbox, refs, each=told)


data_app.command("pending")(review.list_pending)
data_app.command("accept")(review.accept)
data_app.command("reject")(review.reject)


@data_app.command("init")
def init(ctx: typer.Context) -> None:
    """Create the inbox empty when it is absent (a fresh clone; dvc.yaml's `inbox` stage runs
    this); refused when dvc.lock records images in it that are not here (`dvc pull` them)."""
    layout = state(ctx).layout
    created = tracked.ensure_inbox(layout.project, layout.inbox)
    count = len(inbox.listing(layout.inbox)[0])
    what = "created the empty inbox" if created else f"the inbox holds {count} image(s)"
    console.print(f"{what}: {layout.inbox}", markup=False)


@data_app.command("sync")
def sync_inbox(ctx: typer.Context) -> None:
    """Bring the inbox in line with the shared inbox (params `inbox.shared`): download what other
    hosts added, delete what was removed from it, publish files dropped in here (inbox/sync.py)."""
    layout = state(ctx).layout
    shared = open_shared(state(ctx).params().inbox.shared, layout)
    if shared is None:
        raise DataError("no shared inbox: set inbox.shared in params.yaml (s3://BUCKET/PREFIX)")
    with dvc_claim.changing_inbox(layout.project, layout.inbox):  # not during `dvc repro`
        result = sync.sync(shared, layout.inbox, f"cli:{user_name()}")
    console.print(f"shared inbox {shared.location}: {result.summary()}", markup=False)
    for sha in result.conflicts:
        console.print(f"label conflict: {sha} (ingest refuses it until one label is removed)")
    for sha, problem in result.problems.items():
        console.print(f"not synced: {sha}: {problem}", markup=False)
    for warning in result.warnings:
        console.print(f"warning: {warning}", markup=False)
    if result.problems:
        raise typer.Exit(1)


def shown(path: Path) -> str:
    """A path the user named, its control characters as escapes (a name's newline or escape
    sequence is shown, not obeyed by the terminal)."""
    return printable(str(path))
