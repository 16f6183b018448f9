"""`mnist-pipeline data add|list|remove`: the inbox of labelled digits (inbox.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mnist_pipeline.cli.state import console, state
from mnist_pipeline.core.params import Params
from mnist_pipeline.inbox import events as inbox_events
from mnist_pipeline.inbox import store as inbox

data_app = typer.Typer(
    help="Labelled digits users add (data/extra/<digit>/): add, list, remove.",
    no_args_is_help=True,
)


@data_app.command("add")
def add(
    ctx: typer.Context,
    images: Annotated[
        list[Path],
        typer.Argument(metavar="IMAGE", help="Image files (any format predict reads)."),
    ],
    label: Annotated[
        int,
        typer.Option(
            "--label", "-l", min=0, max=9, metavar="DIGIT", help="The digit they show, 0-9."
        ),
    ],
) -> None:
    """Store images under their label (the same image twice is stored once); with a Prefect
    server configured, enough new ones start a retraining run (schedule.min_new_images)."""
    params = state(ctx).params()  # before storing anything: bad params change nothing
    folder = state(ctx).layout.inbox
    inbox.check_label(label)
    added: list[inbox.Added] = []
    try:
        for path in images:
            added.append(inbox.add_file(folder, path, label))
    finally:  # a bad file stops the command; the images stored before it still count
        for done in added:
            what = "added" if done.new else "already in the inbox"
            console.print(f"{what}: {done.entry.path} (label {done.entry.label})", markup=False)
        _note_added(folder, added, params)


def _note_added(folder: Path, added: list[inbox.Added], params: Params) -> None:
    """Count the new images for the retraining trigger, and say when it fired (inbox_events)."""
    found = inbox.entries(folder)
    told = inbox_events.note_added(
        folder,
        sum(done.new for done in added),
        {"images": len(found), "inbox_sha256": inbox.inbox_sha256(found)},
        params.schedule.min_new_images,
        params.registry.model_name,
    )
    if told:
        console.print(told, markup=False)


@data_app.command("list")
def list_entries(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON list.")] = False,
) -> None:
    """Every labelled image in the inbox, and the count per digit."""
    found = inbox.entries(state(ctx).layout.inbox)
    if as_json:
        print(json.dumps([entry.to_dict() for entry in found]))
        return
    for entry in found:
        print(f"{entry.label}  {entry.sha256[:12]}  {entry.path}")
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
        typer.Argument(metavar="SHA|PATH", help="SHA-256 prefixes (8+ digits) or paths."),
    ],
) -> None:
    """Retract images from the inbox."""
    for entry in inbox.remove(state(ctx).layout.inbox, refs):
        console.print(f"removed: {entry.path} (label {entry.label})", markup=False)
