"""`mnist-pipeline models restart-aliases`: a fresh start for an alias document that lost
events (deleted, emptied, or replaced by an older copy), when no copy of it is left."""

from __future__ import annotations

import typer
from rich.console import Console

from mnist_pipeline.cli.registry_options import Actor, Comment, mover
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
