"""Which version a caller's inputs hash (its fingerprint) produced.

A card carries the fingerprint of the submission that registered it. A later submission with
another fingerprint whose files turn out identical to a version's (code or params changed in
ways that did not change the model) registers nothing; its fingerprint is remembered for that
version in `inputs/<fingerprint>.json` (created once, never changed), so that a caller asking
again (a scheduled retraining whose inputs are unchanged since) is told the version instead of
producing the same files once more. The pointer is neither sealed nor signed: it can only name
a version, which is read and verified as any other.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from mnist_pipeline.registry import keys
from mnist_pipeline.registry.card import inputs_of

if TYPE_CHECKING:
    from mnist_pipeline.registry.api import Registry


def remember(registry: Registry, version: int, fingerprint: str) -> None:
    """Record that inputs `fingerprint` produced `version`'s files (kept if one is there)."""
    body = json.dumps({"version": version}).encode()
    registry.storage.create(keys.inputs_key(registry.name, fingerprint), body)


def version_with(registry: Registry, fingerprint: str) -> int | None:
    """The newest intact-card version registered with `fingerprint`, else the one a pointer
    names if its card is intact; None if neither."""
    intact = {}
    for version, card, _ in reversed(registry.catalogue(strict=True)):
        if card is None:
            continue
        if inputs_of(card) == fingerprint:
            return version
        intact[version] = card
    if not keys.SHA256_RE.fullmatch(fingerprint):
        return None
    data = registry.storage.read(keys.inputs_key(registry.name, fingerprint))
    try:
        named = json.loads(data)["version"] if data is not None else None
    except (ValueError, KeyError, TypeError):
        return None  # not a pointer: as if there were none (the caller trains)
    return named if isinstance(named, int) and named in intact else None
