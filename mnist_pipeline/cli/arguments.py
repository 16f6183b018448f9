"""Checks of command-line values made when the command line is read: a bad one is a usage
error (exit 2) naming the option, before any command runs."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import typer

from mnist_pipeline.cli.registry_options import reference
from mnist_pipeline.core.text import empty_path


def given_path(text: str) -> Path:
    """A path option or argument as typed (its `parser`); an empty or blank one is a usage
    error."""
    if problem := empty_path(text):
        raise typer.BadParameter(problem)
    return Path(text)


given_path.__name__ = "path"  # what --help calls its type, as for a plain Path


def model_reference(text: str) -> str:
    """--model as given: a path, or a version or alias the registry could hold (usage error
    otherwise, as for `models show`)."""
    from mnist_pipeline.serving.predict import is_model_path  # onnxruntime: only for predict

    if not text:
        raise typer.BadParameter("the model is empty: give an .onnx path, a version or an alias")
    return text if is_model_path(text) else reference(text)


def check_server_url(url: str) -> None:
    """A usage error unless `url` is a server's http(s) base URL (a blank one too: not the
    default server's answer, unasked): a host, and no query or fragment for /model to land in."""
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises ValueError for a port that is no number
    except ValueError as exc:  # "Invalid IPv6 URL", a bad port
        raise typer.BadParameter(f"{url!r}: {exc}", param_hint="--url") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise typer.BadParameter(
            f"{url!r} is not an http(s) URL such as http://127.0.0.1:8000", param_hint="--url"
        )
    if parts.query or parts.fragment or url.strip().endswith(("?", "#")):
        raise typer.BadParameter(
            f"{url!r}: a server's base URL has no query or fragment", param_hint="--url"
        )
