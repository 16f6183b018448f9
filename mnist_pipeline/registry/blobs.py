"""A registry's files as blobs: stored once each under their SHA-256 (keys.blob_key), shared
by every version that holds the same bytes, and written again where the store damaged them."""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING

from mnist_pipeline.core.errors import RegistryError
from mnist_pipeline.registry import keys
from mnist_pipeline.registry.storage import Storage

if TYPE_CHECKING:
    from mnist_pipeline.registry.api import Registry

logger = logging.getLogger("mnist_pipeline.registry")


def store(registry: Registry, blobs: dict[str, bytes]) -> None:
    """Create each blob (by SHA-256) if absent; one already there (left by a registration that
    did not commit, or another version's) has its age restarted so that gc, which keeps young
    blobs, cannot take it before this card commits. One whose bytes are not its SHA-256
    (damaged in the store: `models verify` says "modified") is written anew with these, which
    its name says it holds."""
    storage, keyed = registry.storage, {keys.blob_key(registry.name, h): h for h in blobs}
    created = storage.create_many([(key, blobs[sha256]) for key, sha256 in keyed.items()])
    held = [key for key, new in zip(keyed, created, strict=True) if not new]
    stored = dict(zip(held, storage.renew_many(held), strict=True))
    gone = [key for key, data in stored.items() if data is None]  # collected in between
    storage.create_many([(key, blobs[keyed[key]]) for key in gone])
    for key, data in stored.items():
        if data is not None and hashlib.sha256(data).hexdigest() != keyed[key]:
            _repair(storage, key, blobs[keyed[key]], keyed[key])


def restore(registry: Registry, blobs: dict[str, bytes]) -> None:
    """The blobs of a committed version, `blobs` by SHA-256, as registering its files again
    brings them back: those the store lost created, those damaged written anew. Nothing else
    is written (a committed card keeps its blobs from gc: no age to restart)."""
    storage, keyed = registry.storage, {keys.blob_key(registry.name, h): h for h in blobs}
    present = set(storage.list(f"{registry.name}/{keys.BLOBS}/"))
    storage.create_many([(key, blobs[sha]) for key, sha in keyed.items() if key not in present])
    held = [key for key in keyed if key in present]
    for key, data in zip(held, storage.read_many(held), strict=True):
        if data is None or hashlib.sha256(data).hexdigest() != keyed[key]:
            _repair(storage, key, blobs[keyed[key]], keyed[key])


def _repair(storage: Storage, key: str, data: bytes, sha256: str, tries: int = 3) -> None:
    """Write `data` (its SHA-256 is `sha256`, the key's name) where the blob at `key` is
    damaged or gone, by compare-and-swap or create-only: one another writer repaired meanwhile
    is left as it is; RegistryError when it kept changing."""
    for _ in range(tries):
        found = storage.read_document(key)
        if found is not None and hashlib.sha256(found[0]).hexdigest() == sha256:
            return  # repaired (or created) by another writer meanwhile
        if storage.create(key, data) if found is None else storage.swap(key, data, found[1]):
            if found is not None:
                logger.warning(
                    "stored blob %s in %s was damaged: written anew", key, storage.location
                )
            return
    raise RegistryError(f"stored blob {key} in {storage.location} kept changing while repaired")
