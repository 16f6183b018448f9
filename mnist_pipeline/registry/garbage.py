"""Garbage in a registry: blobs no card refers to, left by registrations that did not commit
(commit.py), and partial writes a killed writer left (a local folder's temp files), and their
removal (`models gc`) while no registration is in progress, once they are old enough."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from mnist_pipeline.core.errors import RegistryError
from mnist_pipeline.registry import keys

if TYPE_CHECKING:
    from mnist_pipeline.registry.api import Registry

# Blobs younger than this are kept: a registration may be storing them. The writers' lock keeps
# gc off a registration in progress, but a lease on S3 can be lost by a holder that stalled past
# its time to live and then goes on writing (no fencing token); so, as git prunes only objects
# older than gc.pruneExpire, what may belong to a registration still under way is left alone.
GRACE_S = 3600.0


def find(registry: Registry) -> list[str]:
    """Blobs no card refers to (left by registrations that did not commit), then the storage's
    abandoned partial writes. Every card counts, also one whose seal or signature fails (its
    files are evidence, not garbage); a card that is not even readable JSON stops the search
    (RegistryError), since what it needs is unknown."""
    name, listing = registry.name, registry.storage.list(f"{registry.name}/")
    used: set[str] = set()
    versions = keys.committed_versions(name, listing)
    cards = registry.storage.read_many([keys.card_key(name, version) for version in versions])
    for version, data in zip(versions, cards, strict=True):
        try:
            files = json.loads((data or b"").decode("utf-8"))["files"]
            used |= {keys.blob_key(name, str(sha)) for sha in files.values()}
        except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
            raise RegistryError(
                f"{name} v{version}: card.json is unreadable, so which stored files it needs "
                "is unknown; restore or remove it before collecting garbage"
            ) from None
    blobs = [key for key in listing if key.startswith(f"{name}/{keys.BLOBS}/") and key not in used]
    return blobs + registry.storage.abandoned(f"{name}/")


def collect(registry: Registry, min_age_s: float = GRACE_S) -> list[str]:
    """Delete what `find` returns, but blobs written less than `min_age_s` ago, while no
    registration is in progress; returns what was deleted."""
    storage, removed = registry.storage, []
    with storage.exclusive(f"{registry.name}/register"):
        found = find(registry)
        ages = storage.ages(f"{registry.name}/{keys.BLOBS}/")
        for key in found:
            if key.rpartition("/")[2].startswith("."):  # a partial write, never a key
                storage.remove_abandoned(key)
            elif ages.get(key, 0.0) >= min_age_s:
                storage.delete(key)
            else:
                continue
            removed.append(key)
    return removed
