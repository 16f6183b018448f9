"""Writing a registry: register a version (alias moves: moves.py). No rename anywhere.

Registering stores each file once under its SHA-256 (create-if-absent), then commits version N
by creating its card (sealed, and signed when a key is configured): of two writers racing
for N, one creates it and the other takes N+1. A crash before the card leaves only unreferenced
blobs (`models verify` lists them, `models gc` removes them: garbage.py); after it, the version
is complete and its alias decision is replayed by the next reader. The alias document is then
replaced by compare-and-swap, retried on conflict.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from mnist_pipeline.core import json_text
from mnist_pipeline.core.errors import RegistryError
from mnist_pipeline.registry import blobs, inputs, keys, trail
from mnist_pipeline.registry.aliases import (
    PRODUCTION,
    checked_actor,
    utc_now,
)
from mnist_pipeline.registry.card import (
    ALIAS_TRAIL_KEY,
    CARD_SCHEMA,
    REGISTRY_FIELDS,
    SIGNATURE_KEY,
    inputs_of,
    seal,
)
from mnist_pipeline.registry.registration import (
    ChampionMoved,
    Registration,
    Submission,
)
from mnist_pipeline.registry.swap import swap_aliases

if TYPE_CHECKING:
    from mnist_pipeline.registry.api import Registry


def register(
    registry: Registry,
    submission: Submission,
    *,
    skip_same_inputs: bool = False,
    actor: str | None = None,
) -> Registration:
    """Store `submission` as the next version of `registry`'s model with its decided alias.
    The cards `restore_lost` read just before are reused, and forgotten when this returns (see
    `_register`)."""
    try:
        return _register(registry, submission, skip_same_inputs, actor)
    finally:
        registry._card_bytes.clear()  # a later registration reads them again


def _register(
    registry: Registry, submission: Submission, skip_same_inputs: bool, actor: str | None
) -> Registration:
    """Store `submission` as the next version of `registry`'s model with its decided alias.

    Nothing is stored when a version already has the same `identity` files, or (with
    `skip_same_inputs`) the same fingerprint: decided while holding the storage's writers' lock
    where it has one, so runs that finish together cannot both register the same model.
    ChampionMoved when production is no longer the version the decision was reached against
    (nothing is committed; decide again). Without a lock, a version whose champion moved after
    this check is kept as staging when its decision is applied (registration.applicable). The audit
    trail records `actor` (default: the local user) and the decision's evidence.
    """
    checked_actor(actor)  # refused before anything is written
    keys.check_alias(submission.decision.alias)
    registry.signing.require_signer()
    clash = set(submission.description) & {*REGISTRY_FIELDS, "decision", SIGNATURE_KEY}
    if clash:
        raise RegistryError(f"a submission may not set the registry's own card fields: {clash}")
    clash = set(submission.decision.evidence) & {"alias", "reason", "champion"}
    if clash:
        raise RegistryError(f"a decision's evidence may not set the decision's own fields: {clash}")
    decision = submission.decision
    submission = replace(
        submission,
        description=_as_stored(submission.description, "description"),
        decision=replace(decision, evidence=_as_stored(decision.evidence, "decision's evidence")),
    )
    contents = {keys.check_relpath(rel): bytes(data) for rel, data in submission.files.items()}
    hashes = {rel: hashlib.sha256(data).hexdigest() for rel, data in contents.items()}
    missing = [rel for rel in submission.identity if rel not in hashes]
    if missing:
        raise RegistryError(f"identity names files the submission lacks: {missing}")
    name = registry.name
    with registry.storage.exclusive(f"{name}/register") as still_held:
        # no duplicate for want of an answer; the cards restore_lost read are not read again
        catalogue = registry.catalogue(strict=True, reuse=True)
        same = submission.fingerprint if skip_same_inputs else None
        kept = _already_held(catalogue, hashes, submission.identity, same)
        if kept is not None:
            fingerprint, version = submission.fingerprint, kept[0]
            card = next(card for number, card, _ in catalogue if number == version)
            if fingerprint is not None and inputs_of(card) != fingerprint:
                inputs.remember(registry, version, fingerprint)  # asked again: this version
            _restore_lost(registry, card, contents, hashes)
            return _existing(registry, *kept)
        # as a writer: a version signed by a key not trusted here stops this one before it
        # commits (its decision, behind it, could never be recorded from here)
        versions = [version for version, _, _ in catalogue]
        state = registry._state_and_revision(versions, writing=True)[0]
        production = state.aliases.get(PRODUCTION)
        if production != submission.decision.champion:  # the caller decides again
            raise ChampionMoved(name, submission.decision.champion, production)
        blobs.store(registry, {hashes[rel]: data for rel, data in contents.items()})
        # A gc that took the lease over from a stalled registration may have read the blobs'
        # ages before `blobs.store` restarted them: stop, or it would delete what the card
        # needs. Once this passes, a gc that takes over later sees them young and keeps them.
        still_held()
        # the first number that can be free; a writer that took it meanwhile makes this N+1
        last_listed = catalogue[-1][0] if catalogue else 0
        first = max(last_listed, state.last_version) + 1
        head = trail.link(state.events[: state.stored])  # what was stored, not replayed
        version = _commit(registry, submission, hashes, first, head)
        # with no other writer's version in between, the listing above holds every one up to it
        listed = [*versions, version] if version == first == last_listed + 1 else None
        # recorded by compare-and-swap, which needs no lease: while the lease is released
        recording = ThreadPoolExecutor(1, thread_name_prefix="alias-swap")
        recorded = recording.submit(_apply_decision, registry, version, submission, actor, listed)
        recording.shutdown(wait=False)
    return recorded.result()


# ---- internals


def restore_lost(
    registry: Registry, files: Mapping[str, bytes], identity: tuple[str, ...]
) -> int | None:
    """The version with the same `identity` files as `files` (None: there is none), the blobs
    of it the store lost that `files` hold stored again. A caller that compares with
    production before registering calls this first: production may be the version hit."""
    contents = {rel: bytes(data) for rel, data in files.items()}
    hashes = {rel: hashlib.sha256(data).hexdigest() for rel, data in contents.items()}
    registry._card_bytes.clear()  # read afresh here, and reused by the registration after it
    catalogue = registry.catalogue(strict=True, reuse=True)
    kept = _already_held(catalogue, hashes, identity, None)
    if kept is None:
        return None
    card = next(card for number, card, _ in catalogue if number == kept[0])
    _restore_lost(registry, card, contents, hashes)
    return kept[0]


def _restore_lost(
    registry: Registry, card: dict[str, Any], contents: dict[str, bytes], hashes: dict[str, str]
) -> None:
    """The blobs of an existing version's `card` that this submission holds, lost by the store
    (`models verify`: "missing") created again, damaged ones ("modified") written anew:
    registering the same files again is how such a file comes back. Blobs are named by their
    SHA-256, so nothing else can be written. A version of schema 1 keeps its files in its own
    folder, not as blobs: not restored."""
    if card.get("schema", 1) < 2:
        return
    held = {
        sha256: contents[rel] for rel, sha256 in hashes.items() if sha256 in card["files"].values()
    }
    if held:
        blobs.restore(registry, held)


def _as_stored(part: Mapping[str, Any], what: str) -> dict[str, Any]:
    """A submission's `part` of the card as the card will hold it once read back from JSON
    (keys as strings), so that the seal is computed over what is stored; RegistryError naming
    `what` when it is not JSON, or JSON no reader of the card would take (nested deeper than
    core.json_text allows: a version committed that way could never be read)."""
    try:
        return json_text.loads(json.dumps(dict(part)))
    except (TypeError, ValueError) as exc:
        raise RegistryError(f"a submission's {what} cannot be stored as JSON: {exc}") from None


def _commit(
    registry: Registry,
    submission: Submission,
    hashes: dict[str, str],
    first: int,
    head: str | None,
) -> int:
    """Create the card of version `first`, or the next one free (another writer took N),
    naming `head`, the audit trail's last stored event (lost.py)."""
    name, version = registry.name, first
    while True:
        card = seal(
            {
                "schema": CARD_SCHEMA,
                "name": name,
                "version": version,
                "created": utc_now(),
                **submission.description,
                "decision": submission.decision.to_dict(),
                "inputs": submission.fingerprint,
                "files": dict(sorted(hashes.items())),
                ALIAS_TRAIL_KEY: head,
            }
        )
        signature = registry.signing.sign(card)
        if signature is not None:
            card[SIGNATURE_KEY] = signature
        body = (json.dumps(card, indent=2) + "\n").encode("utf-8")
        if registry.storage.create(keys.card_key(name, version), body):
            registry._card_bytes[version] = body  # replayed next: not read back
            return version
        version += 1


def _apply_decision(
    registry: Registry,
    version: int,
    submission: Submission,
    actor: str | None,
    listed: list[int] | None = None,
) -> Registration:
    """Record the committed version's alias (replaying its decision) in the alias document;
    `listed`: every committed version up to it, as listed before it was committed."""
    warning = None
    try:
        state = swap_aliases(registry, lambda state: state, actor, version, listed)
    except (OSError, RegistryError) as exc:  # committed: say so, do not report a failure
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        warning = (
            f"{keys.ALIASES_FILE} could not be updated ({why}); v{version}'s "
            "decision is in its card, applies from now on, and is written by the next change"
        )
        try:
            state = registry.state()
        except (OSError, RegistryError):  # the store is still down: the submission's decision
            state = None
    events = [] if state is None else state.events
    event = next((e for e in reversed(events) if e.get("version") == version), None)
    alias = str(event["alias"]) if event else submission.decision.alias
    reason = str(event["reason"]) if event else submission.decision.reason
    return Registration(
        name=registry.name,
        version=version,
        alias=alias,
        reason=reason,
        aliases=() if state is None else tuple(state.aliases_of(version)),
        champion=submission.decision.champion,
        warning=warning,
        event=event,
    )


def _already_held(
    catalogue: list[tuple[int, dict[str, Any] | None, str | None]],
    hashes: dict[str, str],
    identity: tuple[str, ...],
    fingerprint: str | None,
) -> tuple[int, str] | None:
    """(version, why) of an intact-card version in `catalogue` with the same identity files, or
    the same fingerprint (when given); None if there is none."""
    for version, card, _ in reversed(catalogue):
        if card is None:
            continue
        if identity and all(card["files"].get(rel) == hashes[rel] for rel in identity):
            return version, f"v{version} has the same {' and '.join(identity)}"
        if fingerprint and inputs_of(card) == fingerprint:
            return version, f"v{version} has the same inputs (registered meanwhile)"
    return None


def _existing(registry: Registry, version: int, why: str) -> Registration:
    state = registry.state()
    return Registration(
        name=registry.name,
        version=version,
        alias=", ".join(state.aliases_of(version)) or "no alias",
        reason=why,
        aliases=tuple(state.aliases_of(version)),
        champion=state.aliases.get(PRODUCTION),
        registered=False,
    )
