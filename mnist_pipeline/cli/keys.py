"""`mnist-pipeline models keygen`: an Ed25519 key pair for signing model cards."""

from __future__ import annotations

import os
from typing import Annotated

import typer
from rich.console import Console

from mnist_pipeline.cli.state import state
from mnist_pipeline.core.errors import RegistryError
from mnist_pipeline.registry.signing import generate

err = Console(stderr=True)


def keygen(
    ctx: typer.Context,
    given: Annotated[
        str,
        typer.Argument(
            metavar="PATH",
            help="where to write the private key (PATH.pub: the public key); a relative PATH "
            "is under --root, as registry.signing_key is",
        ),
    ],
) -> None:
    """Create an Ed25519 key pair for signing model cards (never overwrites a key)."""
    if not given.strip():  # a usage error, as a missing PATH is
        raise typer.BadParameter("the key file's path is empty", param_hint="PATH")
    # a Path would drop a trailing "/" or "/." and write a file named as the folder
    if given.replace(os.sep, "/").rsplit("/", 1)[-1] in ("", ".", ".."):
        raise RegistryError(f"{given} is a folder: give the key file's path in it")
    path = state(ctx).layout.in_project(given)
    public, key = generate(path)
    err.print(  # absolute: params resolve a relative path against the project, not the cwd
        f"private key {path.resolve()} (mode 0600), public key {public.resolve()} (key id "
        f"{key}): set registry.signing_key to the first, add the second to registry.trusted_keys",
        highlight=False,
        soft_wrap=True,
        markup=False,
    )
