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
    (damaged in the store: `models verify` says "modified") is written again with these,
    which its name says it holds: registering a version's files again repairs them."""
    storage, keyed = registry.storage, {keys.blob_key(registry.name, h): h for h in blobs}
    created = storage.create_many([(key, blobs[sha256]) for key, sha256 in keyed.items()])
    held = [key for key, new in zip(keyed, created, strict=True) if not new]
    stored = dict(zip(held, storage.renew_many(held), strict=True))
    gone = [key for key, data in stored.items() if data is None]  # collected in between
    storage.create_many([(key, blobs[keyed[key]]) for key in gone])
    for key, data in stored.items():
        if data is not None and hashlib.sha256(data).hexdigest() != keyed[key]:
            _repair(storage, key, blobs[keyed[key]], keyed[key])


def _repair(storage: Storage, key: str, data: bytes, sha256: str) -> None:
    """Replace the damaged blob at `key` with `data` (its SHA-256 is `sha256`, the name), by
    compare-and-swap: a blob another writer repaired or removed meanwhile is left as it is."""
    found = storage.read_document(key)
    if found is None:
        storage.create(key, data)
    elif hashlib.sha256(found[0]).hexdigest() != sha256 and not storage.swap(key, data, found[1]):
        raise RegistryError(f"stored blob {key} in {storage.location} changed while repaired")
    logger.warning("stored blob %s in %s was damaged: written again", key, storage.location)
