"""The audit trail: the alias document's event log as a hash chain, optionally signed.

Every alias move appends an event saying what moved (action, alias, version, previous), who
moved it (`actor`), when, why (`reason`, and the mover's `evidence`: the decision's evidence
of a registration, the comment of a manual move). Each event carries `prev_sha256`, the SHA-256
of the event before it (None for the first), and `sha256`, the SHA-256 of its own canonical
JSON without `sha256` and `signature`; with a signing key it also carries an Ed25519
`signature` over the same bytes plus `sha256` (signing.py, as cards are signed). An edited,
reordered, or removed-in-the-middle event breaks the chain; a whole log rewritten and rehashed
is caught only by the signatures (`registry.trusted_keys`).

Events written before the log was chained have no `sha256`: they are a legacy prefix, linked to
the chain by the first chained event's `prev_sha256` (the hash of the last legacy event's
canonical JSON) but not otherwise checked. Registry code imports nothing of Prefect: callers
say who the actor is; without one it is the local user.
"""

from __future__ import annotations

import getpass
import hashlib
from collections.abc import Callable
from typing import Any

from mnist_pipeline.core.errors import RegistryError
from mnist_pipeline.registry.card import SIGNATURE_KEY, canonical
from mnist_pipeline.registry.signing import Signing

HASH_KEY = "sha256"
PREV_KEY = "prev_sha256"
Signer = Callable[[dict[str, Any]], dict[str, str] | None]


def default_actor() -> str:
    """`user:<login name>` of this process ("user:unknown" when it has none)."""
    try:
        return f"user:{getpass.getuser()}"
    except (KeyError, OSError):  # no USER/LOGNAME and no passwd entry (some containers)
        return "user:unknown"


def digest(event: Any) -> str:
    """The SHA-256 of an event's canonical JSON without its own hash and signature."""
    if isinstance(event, dict):
        event = {k: v for k, v in event.items() if k not in (HASH_KEY, SIGNATURE_KEY)}
    return hashlib.sha256(canonical(event)).hexdigest()


def link(previous: Any) -> str | None:
    """What the next event's `prev_sha256` must be after `previous` (None: no event before)."""
    if previous is None:
        return None
    if isinstance(previous, dict) and isinstance(previous.get(HASH_KEY), str):
        return str(previous[HASH_KEY])
    return digest(previous)  # a legacy event, without a hash of its own


def chained(events: list[Any], event: dict[str, Any], sign: Signer | None) -> dict[str, Any]:
    """`event` made the next link after `events`: its predecessor's hash, its own, a signature."""
    linked = {**event, PREV_KEY: link(events[-1] if events else None)}
    linked[HASH_KEY] = digest(linked)
    signature = sign(linked) if sign is not None else None
    if signature is not None:
        linked[SIGNATURE_KEY] = signature
    return linked


def check(events: list[Any], signing: Signing) -> list[str]:
    """Every break of the chain (and, with trusted keys, every bad or missing signature)."""
    problems: list[str] = []
    started = False
    for index, event in enumerate(events):
        label = f"alias event {index + 1}"
        hashed = isinstance(event, dict) and HASH_KEY in event
        if not hashed:
            if started:
                problems.append(f"{label} has no hash inside the chain (inserted or stripped)")
            continue  # the legacy prefix
        started = True
        if event[HASH_KEY] != digest(event):
            problems.append(f"{label} was edited (its sha256 does not match its content)")
        expected = link(events[index - 1] if index else None)
        if event.get(PREV_KEY) != expected:
            problems.append(
                f"{label} does not follow the event before it (the history was rewritten, "
                "reordered, or events were removed)"
            )
        try:
            signing.check(event, event.get(SIGNATURE_KEY), label, "the event")
        except RegistryError as exc:
            problems.append(str(exc))
    return problems
