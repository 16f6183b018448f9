"""Images removed from the shared inbox, remembered in the store: `removed/<sha256>.json`.

A host knows an image it holds was removed elsewhere when it saw it in the store before (its
record of what it saw, seen.py). A host without that record (a new worker given an older
snapshot of `data/extra/`, a restored backup, a host whose record was deleted) would take each
removed image it holds for one dropped in by hand, and publish it back to every host. So a
removal leaves a marker first (created once; a removal cut short after it still keeps every host
from publishing the image back), a sync deletes an unseen image that has one instead of
publishing it, and a publication by `data add` or an accepted review (a person adding the image
again) clears it. A marker beside a record (a removal that found the image relabelled or added
again meanwhile) is never read: only an image the store lacks is looked up.
"""

from __future__ import annotations

import json
from contextlib import suppress
from typing import TYPE_CHECKING

from mnist_pipeline.core.errors import DataError

if TYPE_CHECKING:
    from mnist_pipeline.inbox.shared import SharedInbox

REMOVED = "removed/"


def key(digest: str) -> str:
    return f"{REMOVED}{digest}.json"


def remember(shared: SharedInbox, digest: str, labels: list[int]) -> None:
    """Mark `digest` as removed from the store (its copies had `labels`)."""
    body = json.dumps({"sha256": digest, "labels": labels}, sort_keys=True).encode()
    shared.call(lambda: shared.storage.create(key(digest), body))  # False: marked already


def was_removed(shared: SharedInbox, digest: str) -> bool:
    """Whether `digest` was removed from the store and not added again since."""
    return shared.call(lambda: shared.storage.read(key(digest))) is not None


def forget(shared: SharedInbox, digest: str) -> None:
    """`digest` was added again: no longer a removed image. Best effort: a marker left beside
    the image's record changes nothing (it is read only for an image the store lacks), so a
    store that fails now does not fail the add that stored the image."""
    with suppress(DataError):  # StoreUnavailable
        shared.call(lambda: shared.storage.delete(key(digest)))
