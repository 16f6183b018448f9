"""`mnist-pipeline models ...`: the registry's commands (thin shims over `Registry`)."""

from __future__ import annotations

import json
import math
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mnist_pipeline.cli.answers import approve, reject
from mnist_pipeline.cli.keys import keygen
from mnist_pipeline.cli.registry_options import (
    Actor,
    Comment,
    alias_name,
    alias_option,
    mover,
    reference_argument,
    version_argument,
)
from mnist_pipeline.cli.restart import acknowledge, restart_aliases
from mnist_pipeline.cli.state import existing_registry, state
from mnist_pipeline.core.errors import PipelineError, RegistryError
from mnist_pipeline.core.reports import ModelCard, parse_report
from mnist_pipeline.core.text import printable
from mnist_pipeline.pipeline import announce, stages
from mnist_pipeline.pipeline.card import summary_lines
from mnist_pipeline.pipeline.register import require_promotable
from mnist_pipeline.pipeline.register import verify as verify_versions
from mnist_pipeline.pipeline.versions import ONNX_FILE
from mnist_pipeline.registry import GRACE_S, LostAliases, Registry, UntrustedAliases
from mnist_pipeline.registry.aliases import PRODUCTION, STAGING
from mnist_pipeline.registry.registration import AliasMoved

models_app = typer.Typer(
    help=(
        "The model registry: register, list, show, history, promote, rollback, approve, "
        "reject, resolve, verify, gc, keygen, acknowledge, restart-aliases."
    ),
    no_args_is_help=True,
)
out = Console()
err = Console(stderr=True)


def _cell(value: object) -> str:
    """A stored value as a table shows it: no markup, control characters escaped."""
    return escape(printable(str(value)))


def _aliases(registry: Registry) -> dict[str, int]:
    """The aliases, to show beside versions; none (with a warning) when they cannot be read:
    versions by number stay readable (docs/registry.md)."""
    try:
        return registry.aliases()
    except RegistryError as exc:
        err.print(f"[red]aliases unknown:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return {}


@models_app.command("register")
def register(ctx: typer.Context) -> None:
    """Register what the pipeline last produced (models/, reports/) as the next version."""
    st = state(ctx)
    done = stages.run("register", st.params(), st.layout)
    err.print(done.summary(), soft_wrap=True, highlight=False, markup=False)
    out.print(f"{done.name} v{done.version}", highlight=False, soft_wrap=True)


@models_app.command("list")
def list_versions(ctx: typer.Context) -> None:
    """Table of versions: accuracy, creation time, aliases."""
    registry = existing_registry(ctx)
    by_version: dict[int, list[str]] = {}
    for alias, version in _aliases(registry).items():
        by_version.setdefault(version, []).append(alias)
    table = Table(title=escape(f"{registry.name} ({registry.location})"))
    for column in ("version", "accuracy", "created", "aliases"):
        table.add_column(column)
    refused = []  # damaged, or signed by a key not trusted here: the reason says which
    catalogue = registry.catalogue()
    for version, card, problem in catalogue:
        aliases = ", ".join(sorted(by_version.get(version, [])))
        if card is None:
            table.add_row(str(version), "[red]refused[/]", "?", aliases)
            refused.append(problem)
            continue
        try:
            typed = parse_report(ModelCard, card, f"v{version}'s card")
        except PipelineError as exc:
            table.add_row(str(version), "[red]unreadable[/]", "?", aliases)
            refused.append(str(exc))
            continue
        table.add_row(str(version), f"{typed.metrics.accuracy:.4f}", _cell(typed.created), aliases)
    out.print(table)
    for problem in refused:
        err.print(f"[red]refused:[/] {escape(problem)}", highlight=False, soft_wrap=True)
    listed = {version for version, _, _ in catalogue}
    for version, aliases in sorted(by_version.items()):
        if version not in listed:  # its row would be missing: say where the alias points
            names = ", ".join(sorted(aliases))
            err.print(
                f"warning: {escape(names)} point(s) at v{version}, which does not exist "
                "(`mnist-pipeline models verify`)",
                highlight=False,
                soft_wrap=True,
            )


@models_app.command("show")
def show(
    ctx: typer.Context,
    ref: Annotated[str, reference_argument()],
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole card as JSON.")] = False,
) -> None:
    """A version's model card: a short summary, or all of it with --json."""
    registry = existing_registry(ctx)
    card = registry.card(ref)
    if as_json:
        typer.echo(json.dumps(card, indent=2))
        return
    typed = parse_report(ModelCard, card, f"{registry.name} v{card['version']}'s card")
    aliases = sorted(a for a, v in _aliases(registry).items() if v == typed.version)
    typer.echo("\n".join(summary_lines(typed, aliases)))


@models_app.command("history")
def history(
    ctx: typer.Context,
    alias: Annotated[
        str | None,
        typer.Argument(metavar="[ALIAS]", parser=alias_name, help="Only this alias's moves."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the events as JSON.")] = False,
) -> None:
    """The audit trail: every alias move, who made it, when and why (oldest first)."""
    registry = existing_registry(ctx)
    try:
        log = registry.alias_log()  # one read: the aliases and their events
    except (UntrustedAliases, LostAliases) as exc:  # the trail shows how to repair it
        err.print(f"warning: {exc}; shown as stored, unchecked", markup=False, soft_wrap=True)
        log = registry.alias_log(checked=False)
    everything = log["events"]
    named = {e.get("alias") for e in everything} | set(log["aliases"])
    if alias is not None and alias not in named:
        known = ", ".join(sorted(map(str, named))) or "none"
        raise RegistryError(
            f"no alias {alias!r} in the history of {registry.name}; aliases: {known}"
        )
    events = [e for e in everything if alias is None or e.get("alias") == alias]
    if as_json:
        typer.echo(json.dumps(events, indent=2))
        return
    table = Table(title=f"{registry.name} alias history" + (f": {alias}" if alias else ""))
    for column in ("time", "action", "alias", "version", "previous", "actor", "why"):
        table.add_column(column, overflow="fold")  # a narrow terminal wraps cells, cuts none
    for event in events:
        previous, comment = event.get("previous"), (event.get("evidence") or {}).get("comment")
        why = str(event.get("reason", "")) + (f" ({comment})" if comment else "")
        table.add_row(
            *(_cell(event.get(key, "?")) for key in ("time", "action", "alias")),
            f"v{event.get('version')}",
            "-" if previous is None else f"v{previous}",
            _cell(event.get("actor", "?")),
            _cell(why),
        )
    out.print(table)


@models_app.command("promote")
def promote(
    ctx: typer.Context,
    version: Annotated[int, version_argument("Version to promote: 3 or v3.")],
    alias: Annotated[str, alias_option("Alias to point at it.")] = PRODUCTION,
    comment: Comment = None,
    actor: Actor = None,
    new_alias: Annotated[
        bool, typer.Option("--new-alias", help="Create ALIAS (other than production, staging).")
    ] = False,
) -> None:
    """Point an alias (default production) at a version."""
    registry, actor = existing_registry(ctx), mover(actor)
    if alias not in (PRODUCTION, STAGING) and not new_alias:
        existing = registry.aliases()
        if alias not in existing:  # a typo, most likely: it would stay in the audit trail
            listed = ", ".join(f"{a} -> v{v}" for a, v in sorted(existing.items())) or "none"
            raise RegistryError(
                f"no alias {alias!r} yet (aliases: {listed}); add --new-alias to create it"
            )
    # the registry checks the version's files; require_promotable adds the pipeline's rules
    previous = registry.promote(version, alias, actor, comment, accept=require_promotable(registry))
    before = "nothing" if previous is None else f"v{previous}"
    err.print(f"{alias}: {before} -> v{version}")
    announce.moved(registry, alias, version, previous, actor)


@models_app.command("rollback")
def rollback(
    ctx: typer.Context,
    alias: Annotated[str, alias_option("Alias to roll back.")] = PRODUCTION,
    comment: Comment = None,
    actor: Actor = None,
) -> None:
    """Move an alias (production) back to the version it pointed at before."""
    registry, actor = existing_registry(ctx), mover(actor)
    before = registry.aliases().get(alias)
    try:  # from what was read here: another rollback meanwhile must not make this one a second
        back_to = require_promotable(registry, "rolled back to")
        version = registry.rollback(alias, actor, comment, expected=before, accept=back_to)
    except AliasMoved as moved:
        raise RegistryError(f"{moved}: it moved meanwhile, nothing rolled back") from None
    err.print(f"{alias} -> v{version}")
    announce.moved(registry, alias, version, before, actor)


models_app.command("approve")(approve)
models_app.command("reject")(reject)


@models_app.command("resolve")
def resolve(
    ctx: typer.Context,
    ref: Annotated[str, reference_argument()],
) -> None:
    """Print the path of a verified local copy of a version's ONNX file."""
    typer.echo(str(existing_registry(ctx).fetch(ref, ONNX_FILE)))


@models_app.command("verify")
def verify(ctx: typer.Context) -> None:
    """Re-hash every file of every version; exit 1 listing problems."""
    registry = existing_registry(ctx)
    problems = verify_versions(registry)
    try:
        garbage = registry.garbage()
    except RegistryError as exc:  # an unreadable card: garbage cannot be told apart
        problems, garbage = [*problems, f"unreferenced objects not counted: {exc}"], []
    for problem in problems:
        err.print(f"[red]problem:[/] {escape(problem)}", highlight=False, soft_wrap=True)
    if garbage:
        err.print(
            f"{len(garbage)} unreferenced object(s) left by registrations or writes that did "
            "not finish (`mnist-pipeline models gc` removes them)",
            highlight=False,
            soft_wrap=True,
        )
    if problems:
        raise typer.Exit(1)
    err.print(f"{registry.name}: {len(registry.versions())} version(s) intact")


@models_app.command("gc")
def collect_garbage(
    ctx: typer.Context,
    min_age: Annotated[
        float,
        typer.Option(min=0, metavar="SECONDS", help="Keep files written less than this long ago."),
    ] = GRACE_S,
) -> None:
    """Delete stored files no version refers to, once they are --min-age old.

    Registrations or writes that did not finish leave them; a younger one may be in use."""
    if math.isnan(min_age):  # passes min=0, and would compare false with every age
        raise typer.BadParameter("must be a number of seconds, got nan", param_hint="--min-age")
    done = existing_registry(ctx).collect_garbage(min_age)
    kept = f"; {len(done.kept)} younger than {min_age:g} s kept" if done.kept else ""
    err.print(f"removed {len(done.removed)} unreferenced object(s){kept}")


models_app.command("keygen")(keygen)
models_app.command("acknowledge")(acknowledge)
models_app.command("restart-aliases")(restart_aliases)
