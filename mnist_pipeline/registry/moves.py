"""Moving a registry's aliases by hand: promote, roll back, or note a decision that moves nothing.

Each move is one compare-and-swap of the alias document (swap.py), appended to its audit trail
(trail.py), and only to a version whose files verify; `expected` makes a move conditional on
where the alias points, and `accept` lets the caller add its own rule for the version.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from mnist_pipeline.core.errors import RegistryError
from mnist_pipeline.registry import keys, trail
from mnist_pipeline.registry.aliases import PRODUCTION, AliasState, checked_actor, commented
from mnist_pipeline.registry.registration import AliasMoved
from mnist_pipeline.registry.swap import swap_aliases

if TYPE_CHECKING:
    from mnist_pipeline.registry.api import Registry

UNCHECKED = object()  # promote(expected=...) not given: move the alias wherever it points
Accept = Callable[[int], None]  # a caller's rule for the version an alias moves to: raises


def promote(
    registry: Registry,
    version: int | str,
    alias: str,
    actor: str | None = None,
    comment: str | None = None,
    expected: int | None | object = UNCHECKED,
    accept: Accept | None = None,
) -> int | None:
    """Point `alias` at an intact `version`; returns the version it pointed at before. The
    audit trail records `actor` (default: the local user) and `comment`. With `expected`,
    AliasMoved (nothing moved) unless the alias still points there (None: at nothing);
    `accept(version)` may refuse it by raising (nothing moved)."""
    keys.check_alias(alias)
    checked_actor(actor)  # both refused before anything moves
    commented(comment)

    def move(state: AliasState) -> int | None:
        target = registry.version_of(version, state)
        _require_intact(registry, target, accept)
        if expected is not UNCHECKED and state.aliases.get(alias) != expected:
            raise AliasMoved(registry.name, alias, expected, state.aliases.get(alias))
        why = f"promoted v{target} to {alias}"
        return state.assign(alias, target, "promote", why, actor, commented(comment))

    return swap_aliases(registry, move, actor)


def note(
    registry: Registry,
    version: int | str,
    alias: str,
    action: str,
    reason: str,
    actor: str | None = None,
    comment: str | None = None,
) -> int:
    """Record `action` about `version` and `alias` in the audit trail without moving the alias
    (e.g. a proposal rejected); returns the version number."""
    keys.check_alias(alias)
    checked_actor(actor)  # both refused before anything moves
    commented(comment)
    keys.check_alias(action)  # same shape: lowercase, no separators
    if action in (*trail.MOVES, "rollback"):
        raise RegistryError(f"{action!r} moves an alias: promote or roll back instead of noting it")

    def record(state: AliasState) -> int:
        target = registry.version_of(version, state)
        state.note(action, alias, target, reason, actor, commented(comment))
        return target

    return swap_aliases(registry, record, actor)


def rollback(
    registry: Registry,
    alias: str = PRODUCTION,
    actor: str | None = None,
    comment: str | None = None,
    expected: int | None | object = UNCHECKED,
    accept: Accept | None = None,
) -> int:
    """Move `alias` back to its previous version; returns that version. With `expected`,
    AliasMoved (nothing moved) unless the alias still points there: two operators rolling back
    what they both saw move it back once, not twice. `accept` as for promote."""
    keys.check_alias(alias)
    checked_actor(actor)  # both refused before anything moves
    commented(comment)

    def back(state: AliasState) -> int:
        if expected is not UNCHECKED and state.aliases.get(alias) != expected:
            raise AliasMoved(registry.name, alias, expected, state.aliases.get(alias))
        _, target = state.rollback(alias, actor, commented(comment))
        _require_intact(registry, target, accept)
        return target

    return swap_aliases(registry, back, actor)


def _require_intact(registry: Registry, version: int, accept: Accept | None = None) -> None:
    problems = registry._problems(version, registry._card(version))
    if problems:
        raise RegistryError(f"{registry.name} v{version} is damaged: " + "; ".join(problems))
    if accept is not None:
        accept(version)
