"""What this host has seen in the shared inbox (data/.extra.shared.json): image SHA-256 -> the
label it last saw there, with the store's location and identity. sync.py tells from it whether
an image only here was removed elsewhere or dropped in by hand, and whether a store without its
identity lost everything.
"""

from __future__ import annotations

from pathlib import Path

from mnist_pipeline.core import json_text
from mnist_pipeline.core.atomic import write_json
from mnist_pipeline.core.errors import DataError, describe_os_error
from mnist_pipeline.core.regular_file import read_regular
from mnist_pipeline.inbox.shared import IDENTITY, SharedInbox, StoreUnavailable


def base_file(inbox: Path) -> Path:
    """data/.extra.shared.json: beside the inbox (inside, DVC would hash it with the images)."""
    return inbox.parent / f".{inbox.name}.shared.json"


def _base(inbox: Path) -> dict:
    """The base file's content ({} when there is none)."""
    try:
        raw = json_text.loads(read_regular(base_file(inbox)))
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise DataError(
            f"cannot read {describe_os_error(exc)} (delete it: the next sync starts afresh)"
        ) from None
    except ValueError as exc:
        raise DataError(
            f"cannot read {base_file(inbox)}: {exc} (delete it: the next sync starts afresh)"
        ) from None
    return raw if isinstance(raw, dict) else {}


def read_seen(inbox: Path, shared: SharedInbox) -> dict[str, int]:
    """Image SHA-256 -> label, of every image this host has seen in this store."""
    raw = _base(inbox)
    if not _same_store(raw.get("store"), shared.location, shared.identity()):
        return {}
    try:
        return {str(sha): int(label) for sha, label in dict(raw.get("seen", {})).items()}
    except (ValueError, TypeError) as exc:
        raise DataError(
            f"{base_file(inbox)}: {exc} (delete it: the next sync starts afresh)"
        ) from None


def _same_store(where: object, location: str, identity: str | None) -> bool:
    """Whether the base file's `store` ([location, identity]) is this store: the same identity
    (a store made afresh is another store, wherever it is; the same store named another way,
    `../store` or its absolute path, is the same), or, while it has none, the same location."""
    if not (isinstance(where, list) and len(where) == 2):
        return False
    return where[1] == identity if identity is not None else where == [location, None]


def _last_identity(inbox: Path, location: str) -> str | None:
    """The identity the store at `location` had when this host last synced with it."""
    where = _base(inbox).get("store")
    ok = isinstance(where, list) and len(where) == 2 and where[0] == location
    return where[1] if ok else None


def check_not_lost(shared: SharedInbox, inbox: Path, what: str = "stored") -> None:
    """StoreUnavailable when the store this host synced with has no identity any more (wiped,
    or a share not mounted): writing to it would start a new store and forget what was seen."""
    if shared.identity() is None and _last_identity(inbox, shared.location) is not None:
        raise StoreUnavailable(
            f"shared inbox {shared.location} has lost its {IDENTITY} (wiped, or a share not "
            f"mounted?): nothing {what}; to start a new store from the images here, delete "
            f"{base_file(inbox)}"
        )


def note_seen(inbox: Path, shared: SharedInbox, images: dict[str, int]) -> None:
    """Add images to what this host has seen in the store (the caller holds the inbox's lock)."""
    seen = read_seen(inbox, shared) | images
    where = [shared.location, shared.identity()]
    write_json(base_file(inbox), {"store": where, "seen": dict(sorted(seen.items()))})
