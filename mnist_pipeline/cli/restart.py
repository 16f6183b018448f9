"""Repairs of the alias document's audit trail: `mnist-pipeline models restart-aliases`, a fresh
start for a document that lost events (deleted, emptied, or replaced by an older copy) when no
copy of it is left, and `models acknowledge`, a person vouching for a move from an alias set by
hand (which `models verify` otherwise reports for ever: the trail cannot be edited)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from mnist_pipeline.cli.registry_options import Actor, Comment, mover, required_comment_text
from mnist_pipeline.cli.state import existing_registry

err = Console(stderr=True)


def restart_aliases(ctx: typer.Context, comment: Comment = None, actor: Actor = None) -> None:
    """Start the alias document afresh after it lost events: no alias points anywhere, no
    decision up to the newest version is replayed; promote what should serve next."""
    registry = existing_registry(ctx)
    done = registry.restart_aliases(mover(actor), comment)
    where = "" if done.kept is None else f" The unreadable document was kept as {done.kept}."
    err.print(
        f"{registry.name}: alias document restarted; no alias points anywhere and no "
        f"decision up to v{done.newest} is replayed.{where} Promote the version production should "
        "serve: mnist-pipeline models promote VERSION",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )


def acknowledge(
    ctx: typer.Context,
    event: Annotated[
        int,
        typer.Argument(
            metavar="EVENT", min=1, help="The alias event's number, as `models verify` names it."
        ),
    ],
    comment: Annotated[
        str,
        typer.Option(
            "--comment",
            metavar="TEXT",
            parser=required_comment_text,
            help="Why the alias set by hand was right: recorded in the audit trail.",
        ),
    ],
    actor: Actor = None,
) -> None:
    """Vouch for a move that started from an alias set by hand (`models verify` names it): an
    `acknowledge` event in the audit trail, after which verify no longer reports it."""
    registry = existing_registry(ctx)
    done = registry.acknowledge(event, comment, mover(actor))
    err.print(
        f"{registry.name}: alias event {event} ({done.get('action')} of {done.get('alias')!r} "
        f"to v{done.get('version')}) acknowledged",
        highlight=False,
        markup=False,
    )
