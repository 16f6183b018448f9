"""Moving a registry's aliases by hand: promote, roll back, note a decision that moves nothing,
acknowledge a move from an alias set by hand, or restart an alias document that lost events
(lost.py).

Each move is one compare-and-swap of the alias document (swap.py), appended to its audit trail
(trail.py), and only to a version whose files verify; `expected` makes a move conditional on
where the alias points, and `accept` lets the caller add its own rule for the version.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mnist_pipeline.core.errors import RegistryError, StoreError
from mnist_pipeline.registry import aliases as alias_doc
from mnist_pipeline.registry import keys, lost, trail
from mnist_pipeline.registry.aliases import PRODUCTION, AliasState, checked_actor, commented
from mnist_pipeline.registry.audit import refuse_forged
from mnist_pipeline.registry.registration import AliasMoved, NotPromotable
from mnist_pipeline.registry.swap import SWAP_ATTEMPTS, swap_aliases

if TYPE_CHECKING:
    from mnist_pipeline.registry.api import Registry

UNCHECKED = object()  # promote(expected=...) not given: move the alias wherever it points
Accept = Callable[[int], None]  # a caller's rule for the version an alias moves to: raises
KEPT_KEY = "kept"  # a restart event's evidence: where the unreadable document's bytes were kept


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
    if action in (*trail.MOVES, "rollback", trail.RESTART):
        raise RegistryError(
            f"{action!r} moves an alias: promote, roll back or restart instead of noting it"
        )
    if action == trail.ACKNOWLEDGE:
        raise RegistryError(f"{action!r} is recorded by `acknowledge`, not as a note")

    def record(state: AliasState) -> int:
        target = registry.version_of(version, state)
        state.note(action, alias, target, reason, actor, commented(comment))
        return target

    return swap_aliases(registry, record, actor)


def acknowledge(
    registry: Registry, number: int, comment: str, actor: str | None = None
) -> dict[str, Any]:
    """Record that a person checked alias event `number`, a move from an alias set by hand
    (`models verify` reports it: trail.unexplained), and found it intended: an `acknowledge`
    event naming that event's hash, so verify no longer reports it. Moves nothing; returns
    the acknowledged event. RegistryError for an event verify does not report."""
    checked_actor(actor)
    evidence = commented(comment)
    if not comment.strip():
        raise RegistryError("an acknowledgement needs a --comment saying why the move was right")

    def record(state: AliasState) -> dict[str, Any]:
        if not 1 <= number <= len(state.events):
            raise RegistryError(
                f"{registry.name} has no alias event {number} (its trail holds "
                f"{len(state.events)}; `models history` lists them)"
            )
        if number not in trail.unexplained(state.events):
            raise RegistryError(
                f"alias event {number} of {registry.name} is not a move from an alias set by "
                "hand that `models verify` reports: nothing to acknowledge"
            )
        event = state.events[number - 1]
        if not isinstance(event.get(trail.HASH_KEY), str):  # unexplained judges any with `previous`
            raise RegistryError(
                f"alias event {number} of {registry.name} has no hash to name (written before "
                "the trail was chained): it cannot be acknowledged"
            )
        why = f"acknowledged alias event {number}: its start, set by hand, was intended"
        state.note(
            trail.ACKNOWLEDGE,
            event["alias"],
            event.get("version"),
            why,
            actor,
            {**evidence, trail.ACKNOWLEDGES: event[trail.HASH_KEY]},
        )
        return event

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


@dataclass(frozen=True)
class Restarted:
    """What `restart` did: the newest version (its decision and every earlier one not
    replayed) and where an unreadable document's bytes were kept (None: it was readable)."""

    newest: int
    kept: str | None


def restart(registry: Registry, actor: str | None = None, comment: str | None = None) -> Restarted:
    """Start an alias document that lost events, or cannot be read at all, afresh (lost.py);
    returns the newest version, the last whose decision is not replayed. RegistryError when
    nothing was lost, or when the stored document's own trail does not verify (trusted keys)."""
    checked_actor(actor)  # both refused before anything moves
    commented(comment)
    registry.signing.require_signer()
    key = keys.aliases_key(registry.name)
    tried: tuple[str, Restarted] | None = None  # the last refused attempt's event and result
    for _ in range(SWAP_ATTEMPTS):
        versions = registry.version_numbers()  # before the document (api._state_and_revision)
        found = registry.storage.read_document(key)
        revision = None if found is None else found[1]
        try:
            state = alias_doc.parse(found and found[0], registry._aliases_where())
            unreadable = False
        except RegistryError:  # truncated, not JSON: every event of it is lost
            state, unreadable = AliasState(), True
        if tried is not None and any(e.get("sha256") == tried[0] for e in state.events):
            return tried[1]  # stored, its answer lost: not restarted twice
        state.model = registry.name
        if revision is not None and not unreadable:
            refuse_forged(registry, state, revision)
        gone = lost.lost(registry, state.events, versions)
        if not gone and not unreadable:
            raise RegistryError(
                f"{registry._aliases_where()} holds every alias event its versions were "
                "registered after: nothing to restart"
            )
        newest = max(versions, default=0)
        state.sign = registry.signing.sign
        evidence = {lost.LOST_KEY: sorted({head for _, head in gone})} | commented(comment)
        if unreadable and found is not None:  # its events are dropped: its bytes are kept
            evidence[KEPT_KEY] = _keep(registry, found[0])
        state.restart(newest, actor, evidence)
        done = Restarted(newest, evidence.get(KEPT_KEY))
        if registry.storage.swap(key, alias_doc.dump(state), revision):
            return done
        tried = (state.events[-1]["sha256"], done)
    raise RegistryError(
        f"{registry.location}: the alias document kept changing under {SWAP_ATTEMPTS} attempts"
    )


def _keep(registry: Registry, data: bytes) -> str:
    """Store an unreadable alias document's bytes, create-only by their SHA-256 (a second
    restart of the same bytes finds them there); the key, relative to the model's folder."""
    key = keys.lost_aliases_key(registry.name, hashlib.sha256(data).hexdigest())
    registry.storage.create(key, data)
    return key.removeprefix(f"{registry.name}/")


def _require_intact(registry: Registry, version: int, accept: Accept | None = None) -> None:
    try:
        card = registry._card(version)
    except StoreError:
        raise  # the store did not answer: nothing is known of the version
    except RegistryError as exc:  # edited, sealed again, signed by no trusted key
        raise NotPromotable(str(exc)) from None
    problems = registry._problems(version, card)
    if problems:
        raise NotPromotable(f"{registry.name} v{version} is damaged: " + "; ".join(problems))
    if accept is not None:
        accept(version)
