"""Which version a caller's inputs hash (its fingerprint) produced.

A card carries the fingerprint of the submission that registered it. A later submission with
another fingerprint whose files turn out identical to a version's (code or params changed in
ways that did not change the model) registers nothing; its fingerprint is remembered for that
version in `inputs/<fingerprint>.json` (created once, signed like a card when a signing key is
set; one that is not a valid pointer is replaced by the next registration of those inputs),
so that a caller asking again (a scheduled retraining whose inputs are
unchanged since) is told the version instead of producing the same files once more. A pointer
names its model (inside its signature). One that fails the signature policy, or names another
model or no intact version, is passed over (the caller trains), and `verify` reports it: a
pointer is what lets a run skip training.
"""

from __future__ import annotations

import json
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from mnist_pipeline.core import json_text
from mnist_pipeline.core.errors import RegistryError, StoreError
from mnist_pipeline.registry import keys
from mnist_pipeline.registry.card import SIGNATURE_KEY, inputs_of, unsigned
from mnist_pipeline.registry.signing import NotSigned, UntrustedKey, well_formed

if TYPE_CHECKING:
    from mnist_pipeline.registry.api import Registry


def remember(registry: Registry, version: int, fingerprint: str) -> None:
    """Record that inputs `fingerprint` produced `version`'s files. A pointer there is kept,
    unless it is not one of this model (an earlier release's, without its model), its signature
    does not verify, or it names no intact version: then this one replaces it by
    compare-and-swap, or every later run with these inputs would train. One signed by a key
    this host does not trust, or unsigned where it requires signatures, is kept: another host
    may trust it.
    Best effort: a store that refuses it (a policy scoped to other keys) or a fingerprint that
    is no SHA-256 leaves the caller's registration as it was, with nothing registered."""
    pointer: dict[str, Any] = {"inputs": fingerprint, "model": registry.name, "version": version}
    signature = registry.signing.sign(pointer)
    if signature is not None:
        pointer[SIGNATURE_KEY] = signature
    body = json.dumps(pointer, sort_keys=True).encode()
    with suppress(RegistryError):  # StoreError too
        key = keys.inputs_key(registry.name, fingerprint)
        if registry.storage.create(key, body):
            return
        found = registry.storage.read_document(key)
        try:
            named = _pointed(registry, fingerprint)
        except (StoreError, UntrustedKey, NotSigned):
            return  # a pointer another host's keys may accept: theirs to keep
        except RegistryError:
            named = None  # not a pointer of this model, or a signature that does not verify
        intact = {number for number, card, _ in registry.catalogue() if card is not None}
        if found is not None and named not in intact:  # this one takes its place
            registry.storage.swap(key, body, found[1])  # False: another writer's, kept


def version_with(registry: Registry, fingerprint: str) -> int | None:
    """The newest intact-card version registered with `fingerprint`, else the one a pointer
    names if the pointer passes the signature policy and that version's card is intact."""
    intact = set()
    for version, card, _ in reversed(registry.catalogue(strict=True)):
        if card is None:
            continue
        if inputs_of(card) == fingerprint:
            return version
        intact.add(version)
    if not keys.SHA256_RE.fullmatch(fingerprint):
        return None
    try:
        version = _pointed(registry, fingerprint)
    except StoreError:
        raise  # the store did not answer: as for the cards read above
    except RegistryError:
        return None  # not a pointer, or one the signature policy refuses: the caller trains
    return version if version in intact else None


def problems(registry: Registry, listing: list[str], versions: set[int]) -> list[str]:
    """What is wrong with each pointer among `listing` (a listing of the model's keys)."""
    found = []
    prefix = f"{registry.name}/{keys.INPUTS}/"
    for key in listing:
        if not key.startswith(prefix):
            continue
        fingerprint = key.removeprefix(prefix).removesuffix(".json")
        where = f"{keys.INPUTS}/{fingerprint}.json"
        try:
            version = _pointed(registry, fingerprint)
        except RegistryError as exc:
            found.append(f"{where}: {exc}")
            continue
        if version not in versions:
            found.append(f"{where} names v{version}, which does not exist")
    return found


def _pointed(registry: Registry, fingerprint: str) -> int | None:
    """The version the pointer for `fingerprint` names (None: no pointer); RegistryError if it
    is not one, or fails the signature policy."""
    if not keys.SHA256_RE.fullmatch(fingerprint):
        raise RegistryError("not named by a SHA-256 digest")
    data = registry.storage.read(keys.inputs_key(registry.name, fingerprint))
    if data is None:
        return None
    try:
        pointer = json_text.loads(data)
        version = pointer["version"]
        if pointer["inputs"] != fingerprint or type(version) is not int:
            raise ValueError("another fingerprint, or no version number")
        if pointer.get("model") != registry.name:  # copied from another model's inputs/
            raise ValueError(f"made for model {pointer.get('model')!r}, not {registry.name!r}")
    except (ValueError, KeyError, TypeError) as exc:
        raise RegistryError(f"not a pointer to a version ({exc})") from None
    signature = pointer.get(SIGNATURE_KEY)
    label = f"the pointer for inputs {fingerprint[:12]}"
    registry.signing.check(
        unsigned(pointer),
        None if signature is None else well_formed(signature, label),
        label,
        "its pointer",
    )
    return version
