"""Garbage in a registry: blobs no card refers to, left by registrations that did not commit
(commit.py), and partial writes a killed writer left (a local folder's temp files; an object
store's conditional-write probes), and their removal (`models gc`) while no registration is in
progress, once they are old enough."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mnist_pipeline.core import json_text
from mnist_pipeline.core.errors import RegistryError
from mnist_pipeline.registry import keys
from mnist_pipeline.registry.card import is_sealed
from mnist_pipeline.registry.storage import hidden

if TYPE_CHECKING:
    from mnist_pipeline.registry.api import Registry

# Blobs younger than this are kept: a registration may be storing them. The writers' lock keeps
# gc off a registration in progress, but a lease on S3 can be lost by a holder that stalled past
# its time to live and then goes on writing (no fencing token); so, as git prunes only objects
# older than gc.pruneExpire, what may belong to a registration still under way is left alone.
GRACE_S = 3600.0
# A temp file younger than this is never removed, whatever the limit asked for: alias changes
# (promote, rollback) write theirs under a lock of their own, not the registrations' one gc
# holds, and rename it into place a moment later.
PARTIAL_GRACE_S = 300.0


def find(registry: Registry) -> list[str]:
    """Blobs no card refers to (left by registrations that did not commit), then the storage's
    abandoned partial writes. Every card counts, also one whose signature fails (its files are
    evidence, not garbage); a card that is missing below the newest version (or the alias
    document's), is not even readable JSON, or whose seal fails (its file table may be the
    part edited) stops the search (RegistryError), since what it needs is unknown."""
    name, listing = registry.name, registry.storage.list(f"{registry.name}/")
    used: set[str] = set()
    versions = keys.committed_versions(name, listing)
    recorded = registry._stored_aliases()[0].last_version
    lost = sorted(set(range(1, max(versions + [recorded]) + 1)) - set(versions))
    if lost:  # its files would look unreferenced: restoring the card could not bring them back
        raise RegistryError(
            f"{name} v{lost[0]}: card.json is missing (versions must be consecutive), so which "
            "stored files it needs is unknown; restore it before collecting garbage"
        )
    cards = registry.storage.read_many([keys.card_key(name, version) for version in versions])
    for version, data in zip(versions, cards, strict=True):
        try:
            card = json_text.loads((data or b"").decode("utf-8"))
            files = card["files"]
            used |= {keys.blob_key(name, str(sha)) for sha in files.values()}
        except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError, RegistryError):
            raise RegistryError(
                f"{name} v{version}: card.json is unreadable, so which stored files it needs "
                "is unknown; restore or remove it before collecting garbage"
            ) from None
        if not is_sealed(card):  # an edited file table would free the files it dropped
            raise RegistryError(
                f"{name} v{version}: card.json was modified after registration (its seal "
                "fails), so which stored files it needs is unknown; restore it before "
                "collecting garbage"
            )
    # only blobs: whatever else lies there (a stray file, another model's store put inside
    # this one's) is no registration's leftover
    folder = f"{name}/{keys.BLOBS}/"
    blobs = [
        key
        for key in listing
        if key.startswith(folder)
        and keys.SHA256_RE.fullmatch(key[len(folder) :])
        and key not in used
    ]
    return blobs + registry.storage.abandoned(f"{name}/", GRACE_S)


def collect(registry: Registry, min_age_s: float = GRACE_S) -> Collected:
    """Delete what `find` returns that was written `min_age_s` ago or more (partial writes
    included), while no registration is in progress; what was removed, what was kept."""
    storage, name = registry.storage, registry.name
    with storage.exclusive(f"{name}/register") as still_held:
        blobs = [key for key in find(registry) if not hidden(key)]
        ages = storage.ages(f"{name}/{keys.BLOBS}/")
        old_partial = storage.abandoned(f"{name}/", max(min_age_s, PARTIAL_GRACE_S))
        removed = [key for key in blobs if ages.get(key, 0.0) >= min_age_s] + old_partial
        everything = blobs + storage.abandoned(f"{name}/", 0.0)
        for key in removed:
            still_held()  # else a registration that took the lock over may be using `key`
            if hidden(key):
                storage.remove_abandoned(key)
            else:
                storage.delete(key)
    return Collected(removed, [key for key in everything if key not in removed])


@dataclass(frozen=True)
class Collected:
    """What `models gc` removed, and the garbage it kept for being younger than its limit."""

    removed: list[str]
    kept: list[str]
