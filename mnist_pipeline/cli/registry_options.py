"""Arguments and options the registry's commands share: a version number, a version or alias,
who and why."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from mnist_pipeline.core.errors import RegistryError
from mnist_pipeline.pipeline import announce
from mnist_pipeline.registry import keys
from mnist_pipeline.registry.aliases import checked_actor, commented


def comment_text(text: str) -> str:
    """A --comment the audit trail takes (one printable line); a usage error otherwise."""
    try:
        return commented(text)["comment"]
    except RegistryError as exc:
        raise typer.BadParameter(str(exc)) from None


def required_comment_text(text: str) -> str:
    """A --comment that must say something (an acknowledgement's): blank is a usage error."""
    if not text.strip():
        raise typer.BadParameter("an acknowledgement needs a --comment saying why")
    return comment_text(text)


def actor_text(text: str) -> str:
    """An --actor the audit trail takes (not blank, one printable line); a usage error
    otherwise (an empty one too: it is never replaced by the default)."""
    try:
        return str(checked_actor(text))
    except RegistryError as exc:
        raise typer.BadParameter(str(exc)) from None


Comment = Annotated[
    str | None,
    typer.Option(
        "--comment", metavar="TEXT", parser=comment_text, help="Why: recorded in the audit trail."
    ),
]
Actor = Annotated[
    str | None,
    typer.Option(
        "--actor",
        metavar="WHO",
        parser=actor_text,
        help="Who, for the audit trail (default: the Prefect flow run, else user:<login>).",
    ),
]


def version_number(text: str) -> int:
    """A version as `show` takes one: 3 or v3 (aliases are not numbers)."""
    if keys.REF_VERSION_RE.fullmatch(text.strip()) is None:
        raise typer.BadParameter(f"expected a version number such as 3 or v3, got {text!r}")
    try:  # the registry's own limits (digits), as `show` applies them
        return int(keys.parse_ref(text))
    except RegistryError as exc:
        raise typer.BadParameter(str(exc)) from None


def version_argument(help_text: str) -> Any:
    """A VERSION argument given as 3 or v3."""
    return typer.Argument(metavar="VERSION", parser=version_number, help=help_text)


def alias_name(text: str) -> str:
    """An ALIAS as the registry takes one; a usage error (exit 2) otherwise, as for VERSION."""
    try:
        return keys.check_alias(text)
    except RegistryError as exc:
        raise typer.BadParameter(str(exc)) from None


def reference(text: str) -> str:
    """A VERSION|ALIAS the registry could hold (3, v3, production), kept as written; a usage
    error (exit 2) otherwise. Whether the registry holds it is for the command to find."""
    try:
        keys.parse_ref(text)
    except RegistryError as exc:
        raise typer.BadParameter(str(exc)) from None
    return text


def reference_argument() -> Any:
    """A VERSION|ALIAS argument, checked when the command line is read."""
    return typer.Argument(metavar="VERSION|ALIAS", parser=reference, help="e.g. 3, v3, production")


def alias_option(help_text: str) -> Any:
    """The --alias option, checked when the command line is read."""
    return typer.Option("--alias", metavar="ALIAS", parser=alias_name, help=help_text)


def mover(given: str | None) -> str:
    """Who makes a move: `--actor` as given (an empty one is refused when the command line is
    read, never replaced), else who runs the command (announce.current_actor)."""
    return announce.current_actor() if given is None else given
