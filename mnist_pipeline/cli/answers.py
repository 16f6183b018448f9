"""`mnist-pipeline models approve|reject`: the answer a flow run waiting for approval of a
version gets (pipeline/approval.py resumes it through the Prefect API)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from mnist_pipeline.cli.registry_options import Actor, Comment, mover, version_argument
from mnist_pipeline.cli.state import existing_registry
from mnist_pipeline.pipeline.approval import Answer, resume_waiting

err = Console(stderr=True)


def _answer(ctx: typer.Context, version: int, answer: Answer) -> None:
    """Resume the flow run waiting for approval of `version` with `answer`."""
    registry = existing_registry(ctx)
    registry.version_of(version)  # an unknown version is named, with those that exist
    line = resume_waiting(registry, version, answer)
    err.print(line, highlight=False, markup=False, soft_wrap=True)


def approve(
    ctx: typer.Context,
    version: Annotated[int, version_argument("Version awaiting approval: 3 or v3.")],
    comment: Comment = None,
    actor: Actor = None,
) -> None:
    """Approve a version for production: resume the flow run waiting for it (Prefect API)."""
    _answer(ctx, version, Answer(True, comment or "", mover(actor)))


def reject(
    ctx: typer.Context,
    version: Annotated[int, version_argument("Version awaiting approval: 3 or v3.")],
    comment: Comment = None,
    actor: Actor = None,
) -> None:
    """Reject a version proposed for production (it stays staging): resume its flow run."""
    _answer(ctx, version, Answer(False, comment or "", mover(actor)))
